//! A setting that must never be shown: the SMTP URL (it holds the relay password) and the
//! token keys.
//!
//! [`Secret`] wraps `secrecy::SecretString`, so the text is zeroed when dropped and read
//! only through [`Secret::expose`], an explicit word in the code. `Debug` and `Serialize`
//! print `[redacted]`, so a settings dump, a `?settings` in a log line or an error that
//! carries settings can't leak it.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(SecretString::from(text.into()))
    }

    /// The secret itself: for the one place that must use it (parsing, connecting).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

/// Compares the secrets (a reload asks whether one changed).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_serialize_shows_it() {
        let s = Secret::new("smtp://mailer:hunter2@relay.example.org:587");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"[redacted]\"");
        assert_eq!(s.expose(), "smtp://mailer:hunter2@relay.example.org:587");
        assert_eq!(
            s,
            Secret::new("smtp://mailer:hunter2@relay.example.org:587")
        );
        assert_ne!(s, Secret::new("smtp://other"));
    }
}
