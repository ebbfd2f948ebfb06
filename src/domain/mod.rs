//! Parsed inputs whose invariants everything else can rely on.
//!
//! Text from a form, a CSV file or the configuration enters the program here and leaves as a
//! type that cannot hold a bad value: an address without CR/LF, a name safe for a header, a
//! token with enough entropy, a duration with a unit. Code past this point never re-checks.
//! Untrusted text leaves for a terminal through [`terminal_safe`].

mod duration;
mod email;
mod name;
mod report;
mod secret;
mod terminal;
mod token;
mod verp;

pub use duration::HumanDuration;
pub use email::{EmailError, SubscriberEmail, redact};
pub use name::{NameError, Organisation, SubscriberName};
pub use report::{ReportKind, StatusCode};
pub use secret::Secret;
pub use terminal::terminal_safe;
pub use token::{MemberLink, Token, TokenKey, TokenKeyError, TokenPurpose, hex, new_nonce};
pub use verp::{VerpMatch, VerpTag, is_return_path, verp_match};
