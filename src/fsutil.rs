//! Files and folders for the service's user only, whatever the umask.
//!
//! Everything harborlist writes holds personal data or a secret: the SQLite database (and,
//! through it, its `-wal` and `-shm`), the token key, outbox `.eml` files with live
//! confirmation links, and `subscribers export` files. Every writer goes through here:
//!
//! * [`create_dir_all`] makes missing folders `0700` (existing ones keep their mode: they
//!   are the operator's);
//! * [`create_new`] makes a new file `0600`, refusing one that exists (or a symlink);
//! * [`Replacement`] writes a new `0600` file next to the destination and renames it into
//!   place, so readers never see half a file, the result is `0600` whatever the old file's
//!   mode was, and a symlink at the destination is replaced, never followed.
//!
//! The mode is asked for at creation and then set again on the open handle (`fchmod`),
//! because a umask only ever takes bits away: a strict one (`0277`) would otherwise leave
//! a file its owner cannot write. It depends on nothing else in the crate.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

const FILE_MODE: u32 = 0o600;
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;

/// Creates `path` and any missing parents, each new one readable by its owner only.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(path)
}

/// A new file at `path` that only its owner can read and write. Fails if anything, a
/// dangling symlink included, is already there.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path)?;
    make_private(&file)?;
    Ok(file)
}

/// Creates `path` as an empty private file if nothing is there; leaves an existing file as
/// it is. SQLite gives a database's `-wal`, `-shm` and journal the main file's mode, so a
/// database created this way keeps all of them private.
pub fn ensure_private(path: &Path) -> io::Result<()> {
    match create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` through a [`Replacement`].
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = Replacement::new(path)?;
    file.write_all(bytes)?;
    file.commit()
}

#[cfg(unix)]
fn make_private(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
}

#[cfg(not(unix))]
fn make_private(_file: &File) -> io::Result<()> {
    Ok(())
}

/// A file being written beside its destination, which [`Replacement::commit`] renames into
/// place. Dropped without a commit, it is removed and the destination is untouched.
#[derive(Debug)]
pub struct Replacement {
    file: File,
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Replacement {
    /// A new private file in `dest`'s folder, under a name nobody else is using.
    pub fn new(dest: &Path) -> io::Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
        let dir = dest.parent().unwrap_or(Path::new(""));
        let mut attempts = 0;
        loop {
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".{:016x}.tmp", random()));
            let temp = dir.join(temp_name);
            match create_new(&temp) {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        temp,
                        dest: dest.to_owned(),
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Flushes the data to the disk, for a file that must survive a power cut once renamed.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Renames the file into place, over whatever was at the destination (a symlink there
    /// is replaced itself; what it pointed to is untouched).
    pub fn commit(mut self) -> io::Result<()> {
        std::fs::rename(&self.temp, &self.dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Write for Replacement {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A temporary name's suffix. Uniqueness is what matters (`create_new` catches a clash),
/// so a failing random source falls back to the clock.
fn random() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    })
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn new_folders_are_0700_and_existing_ones_keep_their_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let deep = dir.path().join("a/b");
        create_dir_all(&deep).expect("create");
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(dir.path()), 0o755);
        create_dir_all(&deep).expect("again is fine");
    }

    #[test]
    fn a_new_file_is_0600_and_never_one_that_exists() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key");
        create_new(&path).expect("create");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            create_new(&path).map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists)
        );
        let link = dir.path().join("dangling");
        symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(
            create_new(&link).is_err(),
            "a dangling symlink is not followed"
        );
        assert!(!dir.path().join("nowhere").exists());
        ensure_private(&path).expect("an existing file is fine");
    }

    #[test]
    fn a_replacement_is_0600_replaces_a_symlink_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dest = dir.path().join("out.csv");
        std::fs::write(&dest, "old").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace(&dest, b"new").expect("replace");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(mode(&dest), 0o600);

        let target = dir.path().join("target");
        std::fs::write(&target, "theirs").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.csv");
        symlink(&target, &link).unwrap();
        replace(&link, b"ours").expect("replace the link");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "ours");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "theirs");
        assert_eq!(mode(&target), 0o644);

        // An abandoned replacement leaves the destination and no temporary file.
        let mut half = Replacement::new(&dest).expect("new");
        half.write_all(b"half").unwrap();
        drop(half);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
