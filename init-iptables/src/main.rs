//! `portcullis-init`: parse flags, install or remove the capture rules, exit 0 or 1 with one line.

use std::process::ExitCode;

use clap::Parser;
use portcullis_init::apply::{self, Action};
use portcullis_init::{InitArgs, InitConfig};

fn main() -> ExitCode {
    let args = InitArgs::parse();
    let result = InitConfig::from_args(&args)
        .map_err(anyhow::Error::from)
        .and_then(|cfg| {
            let action = if args.cleanup {
                Action::Cleanup
            } else {
                Action::Install
            };
            apply::execute(&cfg, action, args.backend, args.ipv6, args.dry_run)
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(report) => {
            if args.dry_run {
                print!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis-init: error: {e}");
            ExitCode::FAILURE
        }
    }
}
