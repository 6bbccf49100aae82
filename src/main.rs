//! The `quill` command. Errors reach the user as one line on stderr and a
//! non-zero exit status; a panic is a bug.

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // The context chain on one line, "loading x: y: z"; a cause
            // whose text its error already quotes (an I/O error inside
            // "cannot read PATH: …") is not repeated.
            let mut msg = String::new();
            for cause in err.chain() {
                let text = cause.to_string();
                if msg.is_empty() {
                    msg = text;
                } else if !msg.contains(&text) {
                    msg.push_str(": ");
                    msg.push_str(&text);
                }
            }
            // A message may still quote text from a file (a tensor name, a
            // TOML parser's excerpt) that holds line breaks: the error is
            // always exactly one line, so scripts can rely on it.
            let one_line: Vec<&str> = msg
                .split(['\n', '\r'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            eprintln!("quill: error: {}", one_line.join(" "));
            1
        }
    };
    std::process::exit(code);
}
