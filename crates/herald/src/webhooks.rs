//! `herald webhooks dead-letters list|replay`: through the signed HTTP API, so it works against a
//! running server without touching its files.

use serde_json::json;

use crate::api_client::{ApiClient, print_answer};
use crate::cli::{DeadLettersCommand, WebhooksArgs, WebhooksCommand};

pub fn webhooks(args: WebhooksArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = ApiClient::from_args(&args.api)?;
    let (status, body) = runtime.block_on(run(&client, args.command))?;
    print_answer(status, &body)
}

async fn run(client: &ApiClient, command: WebhooksCommand) -> anyhow::Result<(u16, String)> {
    match command {
        WebhooksCommand::DeadLetters(DeadLettersCommand::List { limit }) => {
            let limit = limit.to_string();
            client.request("GET", "/webhooks/dead_letters", &[("limit", limit.as_str())], "").await
        }
        WebhooksCommand::DeadLetters(DeadLettersCommand::Replay { ids, all }) => {
            let body = if all { json!({ "all": true }) } else { json!({ "ids": ids }) };
            client.request("POST", "/webhooks/dead_letters/replay", &[], &body.to_string()).await
        }
    }
}
