//! A real reverse proxy for the proxy tests: Debian's nginx, started per test with the
//! server block `deploy/nginx/harborlist.conf` documents, in front of a [`TestApp`].
//!
//! The test reads the documented file and changes only what a test must: the listen
//! ports (free loopback ports, IPv4 only), the certificate (the test certificate for
//! 127.0.0.1 in `src/mail/smtp/testdata`, signed by a test CA that no real client trusts),
//! the webroot for certbot's challenge files (a temporary folder) and the upstream (the
//! app's port). Every one of those directives must be in the file as documented, or the
//! test fails, so the docs and the test cannot drift apart.
//!
//! A test that needs nginx fails (with how to install it) when it is missing; it never
//! skips. `.ci/run` installs it.
//!
//! [`TestApp`]: super::TestApp

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::net::TcpStream;

use super::free_port;

const NGINX: &str = "/usr/sbin/nginx";

/// The server block the deployment guide tells people to install.
pub fn documented_server_block() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/harborlist.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mail/smtp/testdata")
}

pub struct Nginx {
    /// The HTTPS port (the documented `listen 443`).
    pub port: u16,
    /// The plain-HTTP port (the documented `listen 80`).
    pub http_port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// Starts nginx with HTTPS on `port`, proxying to harborlist on 127.0.0.1:`upstream`,
    /// and waits until both ports accept connections.
    pub async fn start(port: u16, upstream: u16) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "nginx is not installed: `apt-get install nginx` (.ci/run does this)"
        );
        let dir = tempfile::tempdir().expect("a folder for nginx");
        let http_port = free_port();
        let ports = Ports {
            https: port,
            http: http_port,
            upstream,
        };
        let site = rewrite(&documented_server_block(), dir.path(), &ports);
        std::fs::create_dir_all(dir.path().join("webroot/.well-known/acme-challenge"))
            .expect("webroot");
        std::fs::write(dir.path().join("harborlist.conf"), site).expect("site");
        std::fs::write(dir.path().join("nginx.conf"), main_config(dir.path())).expect("conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg("daemon off; master_process on;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Self {
            port,
            http_port,
            dir,
            child,
        };
        nginx.wait_ready().await;
        nginx
    }

    /// `https://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:<http_port>` + `path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// Where the port-80 server serves `/.well-known/acme-challenge/` from.
    pub fn webroot(&self) -> PathBuf {
        self.dir.path().join("webroot")
    }

    /// nginx's error log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.log());
            }
            let https = TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
            let http = TcpStream::connect(("127.0.0.1", self.http_port))
                .await
                .is_ok();
            if https && http {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "nginx did not listen on {} and {}:\n{}",
            self.port,
            self.http_port,
            self.log()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        super::terminate(&mut self.child);
    }
}

/// A browser-like client that connects from `from` (any 127.x.y.z works on Linux: the
/// whole 127/8 is on the loopback interface), so nginx sees that as the visitor's address.
/// It trusts the test CA only and follows no redirects.
pub fn client_from(from: IpAddr) -> reqwest::Client {
    let ca = std::fs::read(testdata().join("ca.pem")).expect("test CA");
    reqwest::Client::builder()
        .local_address(from)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA parses"))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

struct Ports {
    https: u16,
    http: u16,
    upstream: u16,
}

/// The documented block with the test's ports, certificate, webroot and upstream. Each
/// rule must match at least once; IPv6 listens are dropped (the test listens on 127.0.0.1).
fn rewrite(site: &str, dir: &Path, ports: &Ports) -> String {
    let t = testdata();
    let rules: Vec<(&str, String)> = vec![
        ("listen [::]:", String::new()),
        (
            "listen 443 ssl",
            format!("listen 127.0.0.1:{} ssl http2;", ports.https),
        ),
        ("listen 80;", format!("listen 127.0.0.1:{};", ports.http)),
        (
            "ssl_certificate /etc/letsencrypt/live/",
            format!("ssl_certificate {};", t.join("relay.pem").display()),
        ),
        (
            "ssl_certificate_key /etc/letsencrypt/live/",
            format!("ssl_certificate_key {};", t.join("relay.key").display()),
        ),
        (
            "root /var/www/html;",
            format!("root {};", dir.join("webroot").display()),
        ),
        (
            "proxy_pass http://127.0.0.1:8080;",
            format!("proxy_pass http://127.0.0.1:{};", ports.upstream),
        ),
    ];
    let mut used = vec![0usize; rules.len()];
    let mut out = String::new();
    for line in site.lines() {
        let directive = line.trim_start();
        let rule = rules
            .iter()
            .position(|(prefix, _)| directive.starts_with(prefix));
        match rule {
            Some(i) => {
                used[i] += 1;
                out.push_str(&rules[i].1);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for ((prefix, _), n) in rules.iter().zip(used) {
        assert!(
            n > 0,
            "deploy/nginx/harborlist.conf has no `{prefix}…`, which the test replaces"
        );
    }
    out
}

/// The main configuration around the server block, as Debian's `/etc/nginx/nginx.conf`
/// includes sites, with every file nginx writes inside `dir`. The workers stay root
/// (`user root`), as the test is: they must reach the root-only temporary folder.
fn main_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"user root;
worker_processes 1;
pid {d}/nginx.pid;
events {{
    worker_connections 64;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/harborlist.conf;
}}
"#
    )
}
