use clap::{CommandFactory as _, FromArgMatches as _};
use dhcp_agent::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // `run --config FILE`: the file fills what the command line did not say (clap parses the
    // file's settings again with the command line's, which win).
    if let (Command::Run(args), Some((_, sub))) = (&mut cli.command, matches.subcommand())
        && let Some(path) = args.config.clone()
        && let Err(err) =
            dhcp_agent::config::load(&path).and_then(|c| dhcp_agent::config::apply(c, args, sub))
    {
        eprintln!("dhcp-agent: {err:#}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dhcp-agent: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => dhcp_agent::watch::run(args).await,
            Command::Run(args) => dhcp_agent::run::run(args).await,
            Command::Release(args) => dhcp_agent::release::run(&args),
            Command::Leases(args) => dhcp_agent::leases_view::run(&args),
            Command::Analyze(args) => dhcp_agent::analyze::run(&args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dhcp-agent: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
