//! `payment3`: the operator's command line (SPEC 12), for "I paid but my order is unpaid".
//! Works against AWS (AWS_PROFILE / AWS_REGION as usual) and the local stack (AWS_ENDPOINT_URL).

mod context;
mod error;
mod functions;
mod read;
mod redrive;
mod replay;
mod tables;
mod trace;

use clap::{Parser, Subcommand};

use crate::context::Context;
use crate::error::CliError;

#[derive(Parser, Debug)]
#[command(
    name = "payment3",
    version,
    about = "Look into payment3 for one branch: what happened to an order, re-drive a stored delivery, retry failed events, count table items.",
    long_about = "payment3: the payments team's tool for \"I paid but my order is unpaid\".\n\n\
Start with `payment3 trace <orderId>`: it lists, oldest first, every callback a gateway delivered\n\
for the order, the records written, the card notify records, the ledger, the order's payment\n\
fields and the errors, and ends with a one-line verdict (paid by what and when, pending on KBank,\n\
never reached us, failed because ...). trace and tables only read.\n\n\
Credentials and region come from the usual AWS environment (AWS_PROFILE, AWS_REGION, or\n\
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY). Against the local stack of `make dev`, set\n\
AWS_ENDPOINT_URL=http://127.0.0.1:5050 (moto) and AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9000,\n\
with --branch local.",
    after_help = "Examples:\n  payment3 --branch master trace 482500007436\n  payment3 --branch master trace 482500007436 --json | jq .verdict\n  payment3 --branch master replay 482500007436            (shows what it would do)\n  payment3 --branch master replay 482500007436 --yes\n  payment3 --branch master redrive\n  payment3 --branch master tables\n\nExit codes: 0 done, 1 AWS or environment problem, 2 bad arguments, 3 unknown order, 4 refused (nothing done)."
)]
struct Cli {
    /// The deployment to look at: dev, master, or a feature-branch slug (tables are named
    /// payment3-<name>-<branch>).
    #[arg(
        long,
        short,
        env = "PAYMENT3_BRANCH",
        global = true,
        default_value = "dev"
    )]
    branch: String,

    /// "-rs" while the Rust functions run beside the Python ones (docs/deploy.md); the tables
    /// keep their names.
    #[arg(
        long,
        env = "PAYMENT3_FUNCTION_SUFFIX",
        global = true,
        default_value = ""
    )]
    function_suffix: String,

    /// Print JSON instead of text (trace, redrive's dry run, tables).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything the branch knows about an order, oldest first, with a verdict. Reads only.
    Trace {
        /// The shop's order number (orderId).
        order_id: String,
        /// A KBank charge id (chrg_...) to include, when the tables do not link it to the order
        /// yet (e.g. from the shop or KBank's portal). Repeatable.
        #[arg(long = "charge", value_name = "CHARGE_ID")]
        charges: Vec<String>,
    },
    /// Re-drive a stored delivery of an order into its function, marked as a replay in the inbox.
    ///
    /// Without --yes it only shows the order's deliveries and what re-driving each would do.
    /// Replays go through the Lambda Invoke API (never the public route) and are safe to repeat:
    /// the functions are idempotent (a stored success is kept, a payment is applied once). By
    /// default the latest verified, accepted delivery of each function is re-driven.
    Replay {
        /// The shop's order number (orderId).
        order_id: String,
        /// One delivery, as `receivedAt#requestId` (listed by the dry run).
        #[arg(long, value_name = "RECEIVED_AT#REQUEST_ID")]
        delivery: Option<String>,
        /// Actually invoke (otherwise a dry run).
        #[arg(long)]
        yes: bool,
        /// Also replay a delivery whose signature was not verified or that was rejected.
        #[arg(long)]
        force: bool,
        /// Who is replaying (kept in the inbox as replayOperator); default $USER.
        #[arg(long)]
        operator: Option<String>,
        /// A KBank charge id of the order, for its notify deliveries (see trace --charge).
        #[arg(long = "charge", value_name = "CHARGE_ID")]
        charges: Vec<String>,
    },
    /// Show the events in the failed-events queue (async invokes that failed every retry); with
    /// --yes invoke each again and delete it from the queue once that worked.
    Redrive {
        /// Actually invoke and delete (otherwise a dry run).
        #[arg(long)]
        yes: bool,
    },
    /// Each table of the branch and its item count (DescribeTable).
    Tables,
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Context::connect(&cli.branch, &cli.function_suffix).await?;
    match cli.command {
        Command::Trace { order_id, charges } => {
            trace::run(&ctx, &order_id, &charges, cli.json).await
        }
        Command::Replay {
            order_id,
            delivery,
            yes,
            force,
            operator,
            charges,
        } => {
            replay::run(
                &ctx,
                replay::Options {
                    order_id: &order_id,
                    delivery: delivery.as_deref(),
                    charges: &charges,
                    yes,
                    force,
                    operator: replay::operator(operator.as_deref()),
                },
            )
            .await
        }
        Command::Redrive { yes } => redrive::run(&ctx, yes, cli.json).await,
        Command::Tables => tables::run(&ctx, cli.json).await,
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("payment3: {e}");
        std::process::exit(e.exit_code());
    }
}
