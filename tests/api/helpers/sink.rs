//! An SMTP server inside the test (mailin-embedded on a real TCP port) that keeps every
//! message's bytes, and can be told to fail temporarily or reject recipients.

use std::{
    collections::HashSet,
    net::{IpAddr, TcpListener},
    sync::{Arc, Mutex},
};

use mailin_embedded::{Handler, Response, Server, response};

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub enum Behaviour {
    #[default]
    Accept,
    /// Answer 451 at the end of DATA: a temporary failure.
    TempFail,
    /// Answer 550 to these recipients.
    Reject(HashSet<String>),
}

#[derive(Debug, Default)]
struct Shared {
    messages: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    attempts: Mutex<usize>,
}

#[derive(Clone)]
struct SinkHandler {
    shared: Arc<Shared>,
    from: String,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl Handler for SinkHandler {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_owned();
        self.to.clear();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if let Behaviour::Reject(bad) = &*self.shared.behaviour.lock().unwrap()
            && bad.contains(&to.to_lowercase())
        {
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
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        *self.shared.attempts.lock().unwrap() += 1;
        if matches!(*self.shared.behaviour.lock().unwrap(), Behaviour::TempFail) {
            return response::INTERNAL_ERROR;
        }
        self.shared.messages.lock().unwrap().push(Received {
            from: self.from.clone(),
            to: self.to.clone(),
            bytes: std::mem::take(&mut self.buf),
        });
        response::OK
    }
}

#[derive(Clone)]
pub struct MailSink {
    pub port: u16,
    shared: Arc<Shared>,
}

impl MailSink {
    /// Starts a sink on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        Self::start_on(listener)
    }

    /// A port that nothing listens on yet, for "the relay is down" tests. It is taken below
    /// the kernel's ephemeral range (32768 and up by default): a port from `bind(0)` is
    /// handed out again to any other test's listener or outgoing connection as soon as it
    /// is closed, and then `start_on_port` found it in use. Each call in this process gets
    /// a different port.
    pub fn reserve_port() -> u16 {
        use std::sync::atomic::{AtomicU32, Ordering};
        const FIRST: u32 = 20_000;
        const SPAN: u32 = 12_000;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let start = std::process::id().wrapping_mul(7_919) % SPAN;
        for _ in 0..SPAN {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = u16::try_from(FIRST + (start + n) % SPAN).expect("a port");
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
        panic!("no free port from {FIRST} to {}", FIRST + SPAN);
    }

    /// Starts a sink on a given port (after it was reserved and left closed).
    pub fn start_on_port(port: u16) -> Self {
        Self::start_on(TcpListener::bind(("127.0.0.1", port)).expect("bind sink on reserved port"))
    }

    fn start_on(listener: TcpListener) -> Self {
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let handler = SinkHandler {
            shared: shared.clone(),
            from: String::new(),
            to: Vec::new(),
            buf: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("sink.test")
            .with_num_threads(8)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { port, shared }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.messages.lock().unwrap().len()
    }

    /// DATA transactions seen, accepted or not.
    pub fn attempts(&self) -> usize {
        *self.shared.attempts.lock().unwrap()
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Messages to one recipient.
    pub fn to(&self, address: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Waits until `n` messages have arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        super::eventually(
            secs,
            &format!("{n} message(s) at the SMTP sink"),
            || async { (self.count() >= n).then(|| self.messages()) },
        )
        .await
    }
}
