//! `mesh-filters check <envoy.yaml|config_dump.json|->...`
//! `mesh-filters schema [DIR]`
//!
//! Exit status: 0 when every file checks out, 1 when one has an error, 2 on bad usage or an
//! unreadable file.

use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "usage: mesh-filters check <envoy.yaml | config_dump.json | ->...

Finds the mesh filters (single filters, root_id mesh.<filter>, the suite, root_id mesh, and the
suite as the native module mesh_filters) in an Envoy bootstrap or an admin /config_dump,
validates every plugin configuration and every route's mesh.* metadata (the native module's
typed_per_filter_config) with the filters' own code, and prints the effective settings per route.
Exit status: 0 all good, 1 errors found, 2 bad usage or unreadable file.

usage: mesh-filters schema [DIR]

Writes the JSON Schema of every filter's plugin configuration, of its route metadata and of the
suite into DIR (default: envoy/schema).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("schema") {
        return mesh_filters_cli::schema::command(args.get(1..).unwrap_or_default());
    }
    let (Some("check"), files) = (
        args.first().map(String::as_str),
        args.get(1..).unwrap_or_default(),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if files.is_empty() || files.iter().any(|f| f == "-h" || f == "--help") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for file in files {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mesh-filters: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
        };
        let report = mesh_filters_cli::check::check_text(&text);
        if files.len() > 1 {
            println!("== {file}");
        }
        print!("{}", mesh_filters_cli::check::render(&report));
        failed |= !report.errors.is_empty();
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
