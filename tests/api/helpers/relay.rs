//! A scripted SMTP relay on a real TCP port, for faults mailin cannot play: a refusal at a
//! chosen stage (AUTH, MAIL FROM, RCPT with a given enhanced code), no STARTTLS, or a relay
//! that accepts the connection and never says a word. It offers PIPELINING, and counts
//! sessions and what it accepted. [`ScriptedRelay::stop`] frees its port, so that the same
//! port can then be answered by a working relay (a [`super::MailSink`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

/// What the relay says. Replies are whole lines without CRLF ("535 5.7.8 …").
#[derive(Debug, Clone)]
pub struct Script {
    /// Accepts connections and never speaks.
    pub silent: bool,
    /// The reply to AUTH (offered as PLAIN and LOGIN).
    pub auth: String,
    /// The reply to MAIL FROM.
    pub mail: String,
    /// Replies to RCPT TO for these (lower-case) addresses; the rest are accepted.
    pub rcpt: HashMap<String, String>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            silent: false,
            auth: "235 2.7.0 Authentication successful".into(),
            mail: "250 2.1.0 Ok".into(),
            rcpt: HashMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    sessions: AtomicUsize,
    accepted: Mutex<Vec<Accepted>>,
}

/// A message the relay accepted: its recipients and its Subject header.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub to: Vec<String>,
    pub subject: String,
}

pub struct ScriptedRelay {
    pub port: u16,
    counts: Arc<Counts>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedRelay {
    /// Starts the relay on `port` (reserved with [`super::MailSink::reserve_port`]).
    pub async fn start_on(port: u16, script: Script) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the scripted relay");
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        let (c, s) = (counts.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        c.sessions.fetch_add(1, Ordering::SeqCst);
                        sessions.spawn(session(stream, script.clone(), c.clone()));
                    }
                }
            }
            // The listener and every session's socket close here.
            sessions.shutdown().await;
        });
        Self {
            port,
            counts,
            stop,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.counts.sessions.load(Ordering::SeqCst)
    }

    /// The messages accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.counts.accepted.lock().unwrap().clone()
    }

    /// Closes the port and every session on it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn session(stream: TcpStream, script: Script, counts: Arc<Counts>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if script.silent {
        while let Ok(Some(_)) = lines.next_line().await {}
        return;
    }
    let mut out = String::from("220 relay.test ESMTP scripted\r\n");
    let mut to: Vec<String> = Vec::new();
    let mut mail_ok = false;
    loop {
        if !out.is_empty() {
            if write.write_all(out.as_bytes()).await.is_err() {
                return;
            }
            out.clear();
        }
        let Ok(Some(line)) = lines.next_line().await else {
            return;
        };
        let upper = line.to_ascii_uppercase();
        let reply = match upper.split_whitespace().next().unwrap_or("") {
            "EHLO" => {
                "250-relay.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN".into()
            }
            "HELO" => "250 relay.test".into(),
            "AUTH" => script.auth.clone(),
            "MAIL" => {
                to.clear();
                mail_ok = script.mail.starts_with('2');
                script.mail.clone()
            }
            "RCPT" if !mail_ok => "503 5.5.1 Bad sequence of commands".into(),
            "RCPT" => {
                let address = between(&line, '<', '>').to_lowercase();
                match script.rcpt.get(&address) {
                    Some(refusal) => refusal.clone(),
                    None => {
                        to.push(address);
                        "250 2.1.5 Ok".into()
                    }
                }
            }
            "DATA" if to.is_empty() => "554 5.5.1 No valid recipients".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .ok();
                let mut subject = String::new();
                loop {
                    match lines.next_line().await {
                        Ok(Some(l)) if l == "." => break,
                        Ok(Some(l)) => {
                            if subject.is_empty()
                                && let Some(s) = l.strip_prefix("Subject: ")
                            {
                                subject = s.to_owned();
                            }
                        }
                        _ => return,
                    }
                }
                let to = std::mem::take(&mut to);
                counts
                    .accepted
                    .lock()
                    .unwrap()
                    .push(Accepted { to, subject });
                mail_ok = false;
                "250 2.0.0 Ok: queued".into()
            }
            "RSET" => {
                to.clear();
                mail_ok = false;
                "250 2.0.0 Ok".into()
            }
            "NOOP" => "250 2.0.0 Ok".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await.ok();
                return;
            }
            _ => "502 5.5.2 Command not recognized".into(),
        };
        out.push_str(&reply);
        out.push_str("\r\n");
    }
}

fn between(line: &str, open: char, close: char) -> &str {
    let start = line.find(open).map_or(0, |i| i + 1);
    let end = line[start..].find(close).map_or(line.len(), |i| start + i);
    &line[start..end]
}
