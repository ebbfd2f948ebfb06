//! One SMTP command line (RFC 5321 §4.1), read into a [`Command`] without touching
//! anything: the session decides what it means in its state.
//!
//! Only what a bounce listener needs is understood. Paths are taken as written between the
//! angle brackets (a report's sender is usually `<>`); parameters other than `SIZE=` and
//! `BODY=` are refused, since nothing else is advertised.

/// A command line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    /// A command RFC 5321 or an extension knows that this server does not offer.
    NotImplemented,
    /// A known verb with arguments that don't parse: the reply says why.
    Syntax(&'static str),
    /// Not a command at all.
    Unknown,
}

/// Reads one line (without its CRLF).
pub fn parse(line: &[u8]) -> Command {
    let Ok(line) = std::str::from_utf8(line) else {
        return Command::Unknown;
    };
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => greeting(rest).map_or(Command::Syntax("EHLO needs a domain"), Command::Ehlo),
        "HELO" => greeting(rest).map_or(Command::Syntax("HELO needs a domain"), Command::Helo),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" if rest.trim().is_empty() => Command::Data,
        "RSET" if rest.trim().is_empty() => Command::Rset,
        "QUIT" if rest.trim().is_empty() => Command::Quit,
        "DATA" | "RSET" | "QUIT" => Command::Syntax("this command takes no arguments"),
        // NOOP and VRFY may carry an argument, which says nothing here.
        "NOOP" => Command::Noop,
        "VRFY" => Command::Vrfy,
        "EXPN" | "HELP" | "TURN" | "ETRN" | "BDAT" | "STARTTLS" | "AUTH" | "SEND" | "SOML"
        | "SAML" | "ATRN" => Command::NotImplemented,
        _ => Command::Unknown,
    }
}

fn greeting(rest: &str) -> Option<String> {
    let domain = rest.split_whitespace().next()?;
    Some(domain.to_owned())
}

fn mail(rest: &str) -> Command {
    let Some(args) = after_keyword(rest, "FROM:") else {
        return Command::Syntax("MAIL FROM:<address> expected");
    };
    let Some((from, params)) = path(args) else {
        return Command::Syntax("MAIL FROM:<address> expected");
    };
    let mut size = None;
    for param in params.split_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => match value.parse::<u64>() {
                Ok(n) => size = Some(n),
                Err(_) => return Command::Syntax("SIZE=<bytes> expected"),
            },
            "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
            _ => return Command::Syntax("unsupported MAIL parameter"),
        }
    }
    Command::Mail { from, size }
}

fn rcpt(rest: &str) -> Command {
    match after_keyword(rest, "TO:").and_then(path) {
        Some((to, params)) if params.trim().is_empty() && !to.is_empty() => Command::Rcpt(to),
        Some((_, params)) if !params.trim().is_empty() => {
            Command::Syntax("unsupported RCPT parameter")
        }
        _ => Command::Syntax("RCPT TO:<address> expected"),
    }
}

/// `rest` after `keyword` (case-insensitive), allowing the spaces some clients put around
/// the colon.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = rest.trim_start();
    let head = rest.get(..keyword.len() - 1)?;
    if !head.eq_ignore_ascii_case(&keyword[..keyword.len() - 1]) {
        return None;
    }
    rest[head.len()..].trim_start().strip_prefix(':')
}

/// `<path> params`: the path between the brackets (source routes dropped, RFC 5321
/// §4.1.2), and what follows. A bare address without brackets is taken too.
fn path(args: &str) -> Option<(String, &str)> {
    let args = args.trim_start();
    let (inside, params) = match args.strip_prefix('<') {
        Some(rest) => {
            let end = rest.find('>')?;
            (&rest[..end], &rest[end + 1..])
        }
        None => args.split_once(' ').unwrap_or((args, "")),
    };
    let inside = match inside.rsplit_once(':') {
        Some((route, address)) if route.starts_with('@') => address,
        _ => inside,
    };
    if inside.contains(['<', '>', ' ']) && !inside.starts_with('"') {
        return None;
    }
    Some((inside.to_owned(), params))
}

#[cfg(test)]
mod tests {
    use super::{Command, parse};

    fn mail(from: &str, size: Option<u64>) -> Command {
        Command::Mail {
            from: from.into(),
            size,
        }
    }

    #[test]
    fn the_commands_of_a_session_are_read_whatever_their_case() {
        assert_eq!(
            parse(b"EHLO mx.example.org"),
            Command::Ehlo("mx.example.org".into())
        );
        assert_eq!(parse(b"helo mx"), Command::Helo("mx".into()));
        assert_eq!(parse(b"MAIL FROM:<>"), mail("", None));
        assert_eq!(
            parse(b"mail from: <a@b.example> SIZE=1234 BODY=8BITMIME"),
            mail("a@b.example", Some(1234))
        );
        assert_eq!(
            parse(b"RCPT TO:<t+b1-00@h.example>"),
            Command::Rcpt("t+b1-00@h.example".into())
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:t@h.example>"),
            Command::Rcpt("t@h.example".into())
        );
        assert_eq!(parse(b"data"), Command::Data);
        assert_eq!(parse(b"RSET"), Command::Rset);
        assert_eq!(parse(b"NOOP anything"), Command::Noop);
        assert_eq!(parse(b"VRFY root"), Command::Vrfy);
        assert_eq!(parse(b"QUIT"), Command::Quit);
        assert_eq!(parse(b"EXPN staff"), Command::NotImplemented);
        assert_eq!(parse(b"STARTTLS"), Command::NotImplemented);
    }

    #[test]
    fn bad_arguments_and_garbage_are_told_apart() {
        assert!(matches!(parse(b"EHLO"), Command::Syntax(_)));
        assert!(matches!(parse(b"MAIL TO:<a@b>"), Command::Syntax(_)));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> SIZE=lots"),
            Command::Syntax(_)
        ));
        assert!(matches!(
            parse(b"MAIL FROM:<a@b> RET=HDRS"),
            Command::Syntax(_)
        ));
        assert!(matches!(parse(b"RCPT TO:<>"), Command::Syntax(_)));
        assert!(matches!(
            parse(b"RCPT TO:<a@b> NOTIFY=NEVER"),
            Command::Syntax(_)
        ));
        assert!(matches!(parse(b"RCPT TO:<a@b"), Command::Syntax(_)));
        assert!(matches!(parse(b"DATA now"), Command::Syntax(_)));
        assert_eq!(parse(b"GET / HTTP/1.1"), Command::Unknown);
        assert_eq!(parse(b""), Command::Unknown);
        assert_eq!(parse(b"\xff\xfe MAIL"), Command::Unknown);
    }
}
