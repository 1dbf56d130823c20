//! `heaprof`: look at pprof profiles (heaprof's or Go's) without Go — a `top` table, a diff
//! of two snapshots, and an interactive flame graph SVG.
//!
//! This file owns the command line (clap) and exit codes: 0 done, 1 a file could not be
//! read, decoded or written (one line on stderr saying which and why), 2 a usage error
//! (clap's message). The work is in `load` (files → weighted samples), `table` (flat/cum
//! per function), `rss` (the RSS breakdown heap profiles carry), `flame` (inferno) and
//! `units` (value formatting).

mod flame;
mod load;
mod rss;
mod table;
mod units;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Look at pprof profiles (heaprof's or Go's) without Go.
#[derive(Parser, Debug)]
#[command(name = "heaprof", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which values of the profile to show.
#[derive(Args, Debug, Clone)]
struct Select {
    /// Sample type to show, by name (inuse_space, alloc_space, inuse_objects, alloc_objects,
    /// cpu, …) or number; default: the profile's default_sample_type, else its last type.
    #[arg(long = "sample-index", value_name = "TYPE")]
    sample_index: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Flat and cumulative value per function, largest flat first (like `go tool pprof -top`);
    /// for heaprof's heap profiles, where the process's RSS went, above the table.
    Top {
        /// The profile (gzip-compressed or raw pprof protobuf).
        file: PathBuf,
        /// Show at most N functions (0: all).
        #[arg(short = 'n', long = "nodes", default_value_t = 20, value_name = "N")]
        n: usize,
        /// Sort by cumulative value instead of flat.
        #[arg(long)]
        cum: bool,
        /// Subtract this profile's samples first (pprof's -base): what changed since BASE.
        #[arg(long, value_name = "BASE")]
        base: Option<PathBuf>,
        #[command(flatten)]
        select: Select,
    },
    /// What grew from BASE to NEW, per function (NEW − BASE), largest growth first.
    Diff {
        /// The earlier snapshot.
        base: PathBuf,
        /// The later snapshot.
        new: PathBuf,
        /// Show at most N functions (0: all).
        #[arg(short = 'n', long = "nodes", default_value_t = 20, value_name = "N")]
        n: usize,
        /// Sort by the growth of the cumulative value instead of flat.
        #[arg(long)]
        cum: bool,
        #[command(flatten)]
        select: Select,
    },
    /// Write an interactive flame graph SVG (open it in a browser: click to zoom, Ctrl-F to search).
    Flamegraph {
        /// The profile (gzip-compressed or raw pprof protobuf).
        file: PathBuf,
        /// Where to write the SVG (`-` for standard output).
        #[arg(short = 'o', long = "output", value_name = "SVG")]
        output: PathBuf,
        /// Draw a differential flame graph against this earlier profile (red: grew, blue: shrank).
        #[arg(long, value_name = "BASE")]
        base: Option<PathBuf>,
        /// Title of the graph (default: sample type and file name).
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        select: Select,
    },
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Top {
            file,
            n,
            cum,
            base,
            select,
        } => {
            let view = load::View::open(&file, base.as_deref(), select.sample_index.as_deref())?;
            print_out(&table::top(&view, n, cum))?;
        }
        Command::Diff {
            base,
            new,
            n,
            cum,
            select,
        } => {
            let view = load::View::open(&new, Some(&base), select.sample_index.as_deref())?;
            print_out(&table::diff(&view, n, cum))?;
        }
        Command::Flamegraph {
            file,
            output,
            base,
            title,
            select,
        } => {
            let view = load::View::open(&file, base.as_deref(), select.sample_index.as_deref())?;
            flame::write(&view, title, &output)?;
        }
    }
    Ok(())
}

/// Prints a table; a closed pipe (`heaprof top … | head`) is not an error.
fn print_out(text: &str) -> Result<(), String> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("writing to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error and 0 for --help/--version.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("heaprof: {message}");
            ExitCode::from(1)
        }
    }
}
