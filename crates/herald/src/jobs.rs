//! `herald jobs`: submit, list, inspect and requeue jobs through the signed HTTP API.

use serde_json::{Value, json};

use crate::api_client::{ApiClient, print_answer};
use crate::cli::{JobsArgs, JobsCommand};

pub fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = ApiClient::from_args(&args.api)?;
    let (status, body) = runtime.block_on(run(&client, args.command))?;
    print_answer(status, &body)
}

async fn run(client: &ApiClient, command: JobsCommand) -> anyhow::Result<(u16, String)> {
    match command {
        JobsCommand::Submit { queue, payload, user, priority, delay_secs, idempotency_key } => {
            let payload: Value =
                serde_json::from_str(&payload).map_err(|e| anyhow::anyhow!("--payload must be JSON: {e}"))?;
            let body = json!({
                "payload": payload, "user_id": user, "priority": priority,
                "delay_secs": delay_secs, "idempotency_key": idempotency_key,
            });
            client.request("POST", &format!("/queues/{queue}/jobs"), &[], &body.to_string()).await
        }
        JobsCommand::List { queue, state, limit } => {
            let limit = limit.to_string();
            let mut params = Vec::new();
            if let Some(state) = &state {
                params.push(("state", state.as_str()));
                params.push(("limit", limit.as_str()));
            }
            client.request("GET", &format!("/queues/{queue}"), &params, "").await
        }
        JobsCommand::Inspect { id } => client.request("GET", &format!("/jobs/{id}"), &[], "").await,
        JobsCommand::Requeue { id } => client.request("POST", &format!("/jobs/{id}/requeue"), &[], "{}").await,
        JobsCommand::Cancel { id } => client.request("POST", &format!("/jobs/{id}/cancel"), &[], "{}").await,
    }
}
