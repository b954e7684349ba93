use clap::Parser as _;

fn main() -> std::process::ExitCode {
    // wasmtime creates error values on some successful paths; with RUST_BACKTRACE=1
    // each would capture a backtrace (~25 µs per invocation, see BENCHMARKS.md).
    // Keep backtraces for panics only, unless the user asked for library ones.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Single-threaded here: no runtime or other thread has started yet.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = quiver_host::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
        .unwrap_or_else(|_| "warn,quiver_host=info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        quiver_host::cli::LogFormat::Text => logs.init(),
        quiver_host::cli::LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quiver_host::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
