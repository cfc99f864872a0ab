//! A Rust program built with the standard library (wasm32-wasi), run unmodified on a
//! node: it walks, creates and renames a directory tree in its file area through both
//! absolute `/data` paths and relative ones (wasi-libc resolves those against the working
//! directory, which the node preopens as the area), and prints what it saw.
//! Built by build.sh with Debian's rustc and libstd-rust-dev-wasm32.

use std::fs;
use std::io::Write;
use std::path::Path;

fn walk(dir: &Path, depth: usize, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let kind = if e.file_type()?.is_dir() { "dir" } else { "file" };
        out.push(format!("{}{} {}", "  ".repeat(depth), kind, e.file_name().to_string_lossy()));
        if kind == "dir" {
            walk(&e.path(), depth + 1, out)?;
        }
    }
    Ok(())
}

fn run() -> std::io::Result<()> {
    let runs = match fs::read_to_string("/data/runs") {
        Ok(s) => s.trim().parse::<u32>().unwrap_or(0),
        Err(_) => 0,
    };
    // Absolute paths under /data.
    fs::create_dir_all("/data/tree/a/b")?;
    fs::write("/data/tree/a/b/leaf.txt", format!("leaf of run {runs}\n"))?;
    // Relative paths: the working directory is the area.
    fs::create_dir_all("tree/c")?;
    let mut f = fs::File::create("tree/c/notes.txt")?;
    writeln!(f, "written relative in run {runs}")?;
    drop(f);
    // Rename a directory with its contents (atomic within the area).
    if Path::new("tree/moved").exists() {
        fs::remove_dir_all("tree/moved")?;
    }
    fs::rename("/data/tree/a", "tree/moved")?;
    let leaf = fs::read_to_string("/data/tree/moved/b/leaf.txt")?;
    let notes = fs::read_to_string("tree/c/notes.txt")?;
    let mut listing = Vec::new();
    walk(Path::new("/data/tree"), 0, &mut listing)?;
    fs::write("runs", format!("{}\n", runs + 1))?;
    println!("dirtree: run {runs}");
    for line in listing {
        println!("dirtree: {line}");
    }
    print!("dirtree: leaf {leaf}");
    print!("dirtree: notes {notes}");
    println!("dirtree: cwd {}", std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_else(|e| format!("({e})")));
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        println!("dirtree: error {e}");
        std::process::exit(1);
    }
}
