//! `sqlx::migrate!` embeds `migrations/` at compile time, and cargo does not know the
//! macro reads those files: without this, a new migration is left out of the binary until
//! some Rust source changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
