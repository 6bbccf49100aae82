//! The `quill` command. Errors reach the user as one line on stderr and a
//! non-zero exit status; a panic is a bug.

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` joins the context chain on one line: "loading x: y: z".
            eprintln!("quill: error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
