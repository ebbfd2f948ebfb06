//! Bounces in tests: `[bounces]` with the listener on a free port, RFC 3464 DSNs built
//! from what was delivered, handing them over (with lettre, or over a raw TCP session to
//! see each reply), and reading back scores, events and the unmatched counter.

use harborlist::{config::BounceSettings, config::Settings, store::Store};
use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope,
    transport::smtp::Error as SmtpError,
};
use sqlx::Row;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// `[bounces]` with the defaults and `bounces.listen` on a free port.
pub fn bounces_on(s: &mut Settings) {
    s.bounces = Some(BounceSettings {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..BounceSettings::default()
    });
}

/// `[bounces]` as set, to change one rule.
pub fn bounce_settings(s: &mut Settings) -> &mut BounceSettings {
    s.bounces.as_mut().expect("[bounces] is set")
}

/// An RFC 3464 DSN, as a receiving MTA writes it: sent to `to` (the envelope sender of
/// what failed), about `recipient`, with the returned message's `message_id` in its
/// text/rfc822-headers part. Each has a Message-ID of its own.
pub struct Dsn<'a> {
    pub to: &'a str,
    pub recipient: &'a str,
    pub action: &'a str,
    pub status: &'a str,
    pub diagnostic: &'a str,
    pub message_id: &'a str,
}

impl<'a> Dsn<'a> {
    /// A hard bounce (5.1.1, user unknown).
    pub fn hard(to: &'a str, recipient: &'a str, message_id: &'a str) -> Self {
        Self {
            to,
            recipient,
            action: "failed",
            status: "5.1.1",
            diagnostic: "smtp; 550 5.1.1 The email account that you tried to reach does not exist",
            message_id,
        }
    }

    pub fn status(mut self, status: &'a str, diagnostic: &'a str) -> Self {
        self.status = status;
        self.diagnostic = diagnostic;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let id = harborlist::domain::new_nonce();
        let message_id = self.message_id.trim_matches(['<', '>']);
        format!(
            "Return-Path: <>\r\n\
             From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n\
             To: {to}\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             Date: Wed, 20 Jan 2027 11:00:00 -0600\r\n\
             Message-ID: <dsn.{id}@mx.example.net>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"RPT-{id}\"\r\n\
             \r\n\
             --RPT-{id}\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             Your message could not be delivered to one or more recipients.\r\n\
             .A line starting with a dot, to be stuffed on the wire.\r\n\
             \r\n\
             --RPT-{id}\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; mx.example.net\r\n\
             Arrival-Date: Wed, 20 Jan 2027 10:59:58 -0600\r\n\
             \r\n\
             Final-Recipient: rfc822; {recipient}\r\n\
             Original-Recipient: rfc822;{recipient}\r\n\
             Action: {action}\r\n\
             Status: {status}\r\n\
             Remote-MTA: dns; mail.example.net\r\n\
             Diagnostic-Code: {diagnostic}\r\n\
             \r\n\
             --RPT-{id}\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n\
             Return-Path: <{to}>\r\n\
             From: Safe Harbor Trainings <trainings@harborlist.example.org>\r\n\
             To: {recipient}\r\n\
             Subject: A list message\r\n\
             Message-ID: <{message_id}>\r\n\
             \r\n\
             --RPT-{id}--\r\n",
            to = self.to,
            recipient = self.recipient,
            action = self.action,
            status = self.status,
            diagnostic = self.diagnostic,
        )
        .into_bytes()
    }
}

/// Hands `bytes` to the listener on `port` with lettre, from the null sender to `to`.
pub async fn hand_over(port: u16, to: &[&str], bytes: &[u8]) -> Result<(), SmtpError> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    let to: Vec<Address> = to
        .iter()
        .map(|a| a.parse().expect("a test address"))
        .collect();
    let envelope = Envelope::new(None, to).expect("envelope");
    transport.send_raw(&envelope, bytes).await.map(|_| ())
}

/// The SMTP reply code of a lettre error, e.g. "550".
pub fn reply_code(e: &SmtpError) -> Option<String> {
    e.status().map(|c| c.to_string())
}

/// A hand-driven SMTP session, to see each reply's text.
pub struct RawSmtp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawSmtp {
    /// Connects and returns the session with the greeting.
    pub async fn connect(port: u16) -> (Self, String) {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the bounce listener");
        let (read, writer) = stream.into_split();
        let mut session = Self {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = session.reply().await;
        (session, greeting)
    }

    /// Sends one line (CRLF added) and returns the reply (all lines of a multi-line one).
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Reads one reply; empty once the server closed the connection.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.reader.read_line(&mut line),
            )
            .await
            .expect("a reply in time")
            .expect("read");
            if n == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }
}

/// Waits until every delivery is recorded as sent (PostgreSQL folds its sent log a
/// moment later), so a report matched by Message-ID finds it.
pub async fn all_sent(store: &Store) {
    super::eventually(30, "every delivery recorded as sent", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE state IN ('queued', 'sending')",
        )
        .fetch_one(store.pool())
        .await
        .expect("count");
        (open == 0).then_some(())
    })
    .await;
}

/// (score, status) of a subscriber.
pub async fn bounce_state(store: &Store, email: &str) -> (f64, String) {
    let row = sqlx::query("SELECT bounce_score, status FROM subscribers WHERE email_key = $1")
        .bind(email.to_lowercase())
        .fetch_one(store.pool())
        .await
        .expect("the subscriber");
    (row.get("bounce_score"), row.get("status"))
}

/// The subscriber's id.
pub async fn subscriber_id(store: &Store, email: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM subscribers WHERE email_key = $1")
        .bind(email.to_lowercase())
        .fetch_one(store.pool())
        .await
        .expect("the subscriber")
}

/// One row of `bounce_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct BounceEvent {
    pub source: String,
    pub kind: String,
    pub effect: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub recipient_domain: Option<String>,
    pub subscriber_id: Option<i64>,
    pub delivery_id: Option<i64>,
    pub score: Option<f64>,
}

/// Every event, oldest first.
pub async fn bounce_events(store: &Store) -> Vec<BounceEvent> {
    sqlx::query(
        "SELECT source, kind, effect, status, diagnostic, recipient_domain, subscriber_id,
                delivery_id, score FROM bounce_events ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .expect("bounce events")
    .iter()
    .map(|r| BounceEvent {
        source: r.get("source"),
        kind: r.get("kind"),
        effect: r.get("effect"),
        status: r.get("status"),
        diagnostic: r.get("diagnostic"),
        recipient_domain: r.get("recipient_domain"),
        subscriber_id: r.get("subscriber_id"),
        delivery_id: r.get("delivery_id"),
        score: r.get("score"),
    })
    .collect()
}

/// A counter (without labels) from a `/metrics` page; 0 if it isn't there yet.
pub async fn counter(metrics_url: &str, name: &str) -> f64 {
    let body = reqwest::get(metrics_url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
