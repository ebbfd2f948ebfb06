//! A real IMAP server for the bounce mailbox tests: Debian's Dovecot (`dovecot-imapd`),
//! started per test with a throwaway configuration, one user and a Maildir in a
//! temporary folder, on a free loopback port. Tests put messages in with APPEND and read
//! the folders back over IMAP, as a mail program would.
//!
//! A test that needs it fails (with how to install it) when Dovecot is missing; it
//! never skips. `.ci/run` installs it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use tokio::net::TcpStream;

use super::free_port;

const DOVECOT: &str = "/usr/sbin/dovecot";
/// The mail user's uid and gid (Debian's `nobody` and `nogroup`): Dovecot refuses to
/// keep mail as root.
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

/// The mailbox's login: an address, as at a mail provider (its @ is %40 in the URL).
pub const IMAP_USER: &str = "bounces@harborlist.example.org";
pub const IMAP_PASSWORD: &str = "correct-horse-battery";

pub struct Dovecot {
    pub port: u16,
    /// The implicit-TLS port (`imaps://`), when started with [`Dovecot::start_with_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Child,
}

impl Dovecot {
    /// Starts Dovecot and waits until it greets.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// Starts Dovecot with TLS: STARTTLS on `port` and implicit TLS on `tls_port`, with the
    /// test certificate for 127.0.0.1 (`src/mail/smtp/testdata`, signed by a test CA that
    /// no real client trusts).
    pub async fn start_with_tls() -> Self {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> Self {
        assert!(
            Path::new(DOVECOT).exists(),
            "Dovecot is not installed: `apt-get install dovecot-imapd` (.ci/run does this)"
        );
        let dir = tempfile::tempdir().expect("a folder for Dovecot");
        let port = free_port();
        let tls_port = tls.then(free_port);
        write_config(dir.path(), port, tls_port);
        let log = std::fs::File::create(dir.path().join("dovecot.stderr")).expect("log file");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(dir.path().join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dovecot");
        let dovecot = Self {
            port,
            tls_port,
            dir,
            child,
        };
        dovecot.wait_ready().await;
        dovecot
    }

    /// `bounces.imap_url` for this server with `password`.
    pub fn url_with(&self, password: &str) -> String {
        format!(
            "imap://{}:{password}@127.0.0.1:{}/INBOX",
            IMAP_USER.replace('@', "%40"),
            self.port
        )
    }

    /// `bounces.imap_url` for this server, with the right password.
    pub fn url(&self) -> String {
        self.url_with(IMAP_PASSWORD)
    }

    /// A logged-in session, as the mailbox's owner.
    pub async fn session(&self) -> Session<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to Dovecot");
        let mut client = Client::new(tcp);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("a greeting");
        client
            .login(IMAP_USER, IMAP_PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .expect("the owner logs in")
    }

    /// Puts a message in `folder`, as the provider's MTA would deliver it.
    pub async fn append(&self, folder: &str, bytes: &[u8]) {
        let mut s = self.session().await;
        s.append(folder, None, None, bytes).await.expect("APPEND");
        s.logout().await.expect("LOGOUT");
    }

    /// The messages in `folder`, in order, as bytes; `None` if the folder doesn't exist.
    pub async fn messages(&self, folder: &str) -> Option<Vec<Vec<u8>>> {
        let mut s = self.session().await;
        let exists = match s.examine(folder).await {
            Ok(m) => m.exists,
            Err(_) => return None,
        };
        let mut out = Vec::new();
        if exists > 0 {
            let fetched: Vec<_> = s
                .fetch("1:*", "BODY.PEEK[]")
                .await
                .expect("FETCH")
                .try_collect()
                .await
                .expect("FETCH responses");
            out = fetched
                .iter()
                .filter_map(|f| f.body().map(<[u8]>::to_vec))
                .collect();
        }
        s.logout().await.expect("LOGOUT");
        Some(out)
    }

    /// How many messages `folder` holds (0 if it doesn't exist).
    pub async fn count(&self, folder: &str) -> usize {
        self.messages(folder).await.map_or(0, |m| m.len())
    }

    /// Dovecot's own log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)).await {
                use tokio::io::AsyncReadExt;
                let mut greeting = [0u8; 64];
                let read = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut greeting));
                if let Ok(Ok(n)) = read.await
                    && greeting[..n].starts_with(b"* OK")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "Dovecot did not start on port {}:\n{}\n{}",
            self.port,
            self.log(),
            std::fs::read_to_string(self.dir.path().join("dovecot.stderr")).unwrap_or_default()
        );
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        super::terminate(&mut self.child);
    }
}

/// The throwaway configuration: IMAP only, on loopback, plain text (the password never
/// leaves the machine, which harborlist's `imap://` to loopback allows), one user in a
/// passwd-file, Maildir with `/` between folder levels.
fn write_config(dir: &Path, port: u16, tls_port: Option<u16>) {
    let mail: PathBuf = dir.join("mail");
    std::fs::create_dir_all(&mail).expect("mail folder");
    use std::os::unix::fs::PermissionsExt;
    // The mail processes run as nobody: they must get through the temporary folder.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&mail, Some(MAIL_UID), Some(MAIL_GID)).expect("chown mail");
    std::fs::write(
        dir.join("passwd"),
        format!("{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n"),
    )
    .expect("passwd");
    let d = dir.display();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mail/smtp/testdata");
    let t = testdata.display();
    let ssl = match tls_port {
        Some(_) => format!("ssl = yes\nssl_cert = <{t}/relay.pem\nssl_key = <{t}/relay.key\n"),
        None => "ssl = no\n".to_owned(),
    };
    let imaps_port = tls_port.unwrap_or(0);
    let conf = format!(
        r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%n
mailbox_idle_check_interval = 1 secs
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={d}/mail/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
    );
    std::fs::write(dir.join("dovecot.conf"), conf).expect("dovecot.conf");
}
