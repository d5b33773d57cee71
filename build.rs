//! Migrations are embedded at compile time (`refinery::embed_migrations!`): a migration added,
//! edited or removed must rebuild the crate, which cargo does not know by itself for a new file.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
