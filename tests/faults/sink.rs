//! A fault-injecting SMTP relay (mailin-embedded on a real TCP port), derived from
//! `tests/api/helpers/sink.rs`. It keeps only what the fault tests count (recipients,
//! Message-ID and Subject of each accepted message), so tens of thousands of messages stay
//! cheap to poll, and it can answer:
//!
//! * 451 to the DATA command (a temporary failure; the session carries on),
//! * 451 at the end of DATA. mailin then stays in its DATA state and swallows every later
//!   command of that session, so to the client this is a 451 followed by a relay that never
//!   answers again (until the client's timeout gives up on the connection),
//! * 421 to MAIL FROM, which makes mailin close the connection (a dropped session),
//! * 550 at RCPT for chosen addresses (a permanent failure),
//!
//! and it can be slow to answer the end of DATA.
//!
//! mailin never offers PIPELINING, so [`FaultSink::start_pipelining`] puts a proxy in front
//! of it that does: the fault tests then also cover the pipelined path that real relays
//! (Postfix among them) take.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Shutdown, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use mailin_embedded::{Handler, Response, Server, response};

#[derive(Debug, Clone)]
pub struct Accepted {
    pub to: Vec<String>,
    pub message_id: String,
    pub subject: String,
}

#[derive(Debug, Clone, Default)]
pub struct Mode {
    /// 451 to the DATA command.
    pub temp_fail_at_data: bool,
    /// 451 at the end of DATA, after which the session hangs (see the module docs).
    pub temp_fail_at_end: bool,
    /// 421 to MAIL FROM, and the connection is closed.
    pub drop_on_mail: bool,
    /// 550 at RCPT for these (lower-case) addresses.
    pub reject: HashSet<String>,
    /// How long to think before answering the end of DATA: a slow relay.
    pub delay: Duration,
}

#[derive(Debug, Default)]
struct Shared {
    accepted: Mutex<Vec<Accepted>>,
    mode: Mutex<Mode>,
    /// MAIL FROM commands seen.
    mails: Mutex<usize>,
    /// DATA commands seen, accepted or not.
    datas: Mutex<usize>,
    /// 550s given at RCPT, per address.
    rejected: Mutex<HashMap<String, usize>>,
    /// Reads, through the pipelining proxy, in which a message's terminating dot and the
    /// next MAIL FROM came together.
    riding: Mutex<usize>,
}

#[derive(Clone)]
struct FaultHandler {
    shared: Arc<Shared>,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl Handler for FaultHandler {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        *self.shared.mails.lock().unwrap() += 1;
        self.to.clear();
        if self.shared.mode.lock().unwrap().drop_on_mail {
            return response::NO_SERVICE;
        }
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let key = to.to_lowercase();
        if self.shared.mode.lock().unwrap().reject.contains(&key) {
            *self.shared.rejected.lock().unwrap().entry(key).or_default() += 1;
            return response::NO_MAILBOX;
        }
        self.to.push(to.to_owned());
        response::OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.buf.clear();
        *self.shared.datas.lock().unwrap() += 1;
        if self.shared.mode.lock().unwrap().temp_fail_at_data {
            return response::INTERNAL_ERROR;
        }
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let delay = self.shared.mode.lock().unwrap().delay;
        if !delay.is_zero() {
            // mailin gives each connection its own thread.
            std::thread::sleep(delay);
        }
        if self.shared.mode.lock().unwrap().temp_fail_at_end {
            return response::INTERNAL_ERROR;
        }
        let bytes = std::mem::take(&mut self.buf);
        let accepted = Accepted {
            to: self.to.clone(),
            message_id: header(&bytes, "message-id").unwrap_or_default(),
            subject: header(&bytes, "subject").unwrap_or_default(),
        };
        self.shared.accepted.lock().unwrap().push(accepted);
        response::OK
    }
}

/// The unfolded value of the first header called `name` (lower case), trimmed.
fn header(bytes: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(value) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                value.push_str(line);
                continue;
            }
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.eq_ignore_ascii_case(name)
        {
            found = Some(value.to_owned());
        }
    }
    found.map(|v| v.trim().to_owned())
}

#[derive(Clone)]
pub struct FaultSink {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultSink {
    pub fn start() -> Self {
        Self::start_mailin(false)
    }

    fn start_mailin(nodelay: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        if nodelay {
            // Accepted sockets inherit it on Linux. mailin flushes each reply on its own, so
            // the replies to pipelined commands would otherwise wait on Nagle's algorithm
            // for the proxy's delayed ACK, 40 ms a message.
            socket2::SockRef::from(&listener)
                .set_tcp_nodelay(true)
                .expect("TCP_NODELAY on the sink");
        }
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let handler = FaultHandler {
            shared: shared.clone(),
            to: Vec::new(),
            buf: Vec::new(),
        };
        let mut server = Server::new(handler);
        // One thread per open connection: three daemons with a pool of 4 each, plus the
        // connections of killed processes that the kernel has not torn down yet.
        server
            .with_name("faults.test")
            .with_num_threads(48)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { port, shared }
    }

    /// Like [`FaultSink::start`], but the relay offers PIPELINING (RFC 2920). mailin reads
    /// commands line by line from a buffered stream and answers each in order, which is all
    /// that pipelining asks of a server; it only never says so. A proxy in front of it adds
    /// the keyword to the EHLO reply and counts the writes in which the next envelope rides
    /// behind a message's dot.
    pub fn start_pipelining() -> Self {
        let mut sink = Self::start_mailin(true);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let (inner, shared) = (sink.port, sink.shared.clone());
        sink.port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || proxy(client, inner, shared));
            }
        });
        sink
    }

    /// See [`FaultSink::start_pipelining`].
    pub fn riding(&self) -> usize {
        *self.shared.riding.lock().unwrap()
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.accepted.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.accepted.lock().unwrap().len()
    }

    /// Accepted messages with this subject.
    pub fn with_subject(&self, subject: &str) -> Vec<Accepted> {
        self.shared
            .accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.subject == subject)
            .cloned()
            .collect()
    }

    /// Distinct recipients that got a message with this subject.
    pub fn recipients_of(&self, subject: &str) -> HashSet<String> {
        self.shared
            .accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.subject == subject)
            .flat_map(|m| m.to.iter().map(|t| t.to_lowercase()))
            .collect()
    }

    pub fn mails(&self) -> usize {
        *self.shared.mails.lock().unwrap()
    }

    /// DATA commands: attempts to hand over a message, accepted or not.
    pub fn datas(&self) -> usize {
        *self.shared.datas.lock().unwrap()
    }

    pub fn rejected(&self, address: &str) -> usize {
        self.shared
            .rejected
            .lock()
            .unwrap()
            .get(&address.to_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

/// A message's end and the next envelope in one write.
const RIDING: &[u8] = b"\r\n.\r\nMAIL FROM:";

/// One client session through the pipelining proxy: bytes to mailin as they come, replies
/// back line by line, with PIPELINING added to the EHLO reply. Either side closing closes
/// the other, so a killed client or a dropped session looks the same as without the proxy.
fn proxy(client: TcpStream, inner: u16, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", inner)) else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (Ok(mut to_server), Ok(mut from_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from_client.read(&mut buf) {
            if n == 0 {
                break;
            }
            if buf[..n].windows(RIDING.len()).any(|w| w == RIDING) {
                *shared.riding.lock().unwrap() += 1;
            }
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let mut to_client = client;
    let mut from_server = BufReader::new(server);
    let mut line = Vec::new();
    loop {
        line.clear();
        match from_server.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // mailin's EHLO reply ends with its only extension.
        let out: &[u8] = if line == b"250 8BITMIME\r\n" {
            b"250-8BITMIME\r\n250 PIPELINING\r\n"
        } else {
            &line
        };
        if to_client.write_all(out).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = upstream.join();
}
