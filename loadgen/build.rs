//! Build script: ringd's own (`RINGD_COMMIT` for `--version`); both binaries come from one
//! repository and name the same commit.

#[path = "../build.rs"]
mod commit;

fn main() {
    commit::main();
}
