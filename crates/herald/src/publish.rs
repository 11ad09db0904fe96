//! `herald publish`: send one event through the signed HTTP API, for quickstarts and scripts.

use anyhow::bail;

use crate::api_client::ApiClient;
use crate::cli::PublishArgs;

pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = ApiClient::new(&args.url, &args.app_id, &args.key, &args.secret)?;
    let body = serde_json::json!({ "name": args.event, "channels": args.channels, "data": args.data }).to_string();
    let (status, body) = runtime.block_on(client.request("POST", "/events", &[], &body))?;
    println!("{}", body.trim_end());
    if status != 200 {
        bail!("server answered HTTP {status}");
    }
    Ok(())
}
