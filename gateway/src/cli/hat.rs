//! `rivulet pub/sub/query/status --hat ADDR`: the same commands against a hat-event server
//! (hat's own Event Server, a server on `hat.event.eventer.listen`, or a gateway's
//! `--hat-listen`), through the tokio adapter's hat client. `--name` is the clientName,
//! `--token` (or RIVULET_TOKEN) the clientToken, sent as it is: hat's init carries it in clear,
//! so use `--tls-ca` for a server off this machine.

use rivulet_core::owned::{EventPath, Query, RegisterEvent, Status};
use rivulet_tokio::hat::{self, HatClient, HatError, HatEvents, HatOptions};

use super::{Login, SubArgs, TOKEN_ENV, print_events, print_until, query_events, tls_connector};

/// A hat client for one command, with errors that say what to check.
async fn connect(
    server: &str,
    login: &Login,
    default_name: &str,
    options: impl FnOnce(&mut HatOptions),
) -> Result<(HatClient, HatEvents), String> {
    let name = login.name.clone().unwrap_or_else(|| default_name.to_string());
    let token = login.token.clone().or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|t| !t.trim().is_empty());
    let mut hat_options = HatOptions::new(name.clone());
    hat_options.client_token = token.map(|t| t.trim().to_string());
    options(&mut hat_options);
    let connected = match &login.tls_ca {
        None => hat::connect(server, hat_options).await,
        Some(ca) => hat::connect_via(tls_connector(server, login, ca)?, hat_options).await,
    };
    connected.map_err(|e| match e {
        HatError::Io(e) => format!("no hat server at {server} ({e}); check --hat ADDR (hat's usual port is 23012)"),
        HatError::Refused(reason) => {
            format!("hat server {server} refused {name:?}: {reason}; check --name and --token (or {TOKEN_ENV})")
        }
        HatError::Protocol(why) => {
            format!("{server} does not answer as a hat server ({why}); is ADDR a hat Eventer port?")
        }
        other => format!("hat server {server}: {other}"),
    })
}

pub(super) async fn publish(server: &str, login: &Login, event: RegisterEvent) -> Result<(), String> {
    let (client, _events) = connect(server, login, "rivulet-pub", |_| {}).await?;
    let registered = client.register_with_response(vec![event]).await;
    client.close().await;
    let registered = registered.map_err(|e| match e {
        HatError::Failure => format!("hat server {server} answered failure: the event was not registered"),
        other => format!("not registered: {other}"),
    })?;
    print_events(&registered);
    Ok(())
}

pub(super) async fn subscribe(server: &str, args: &SubArgs, patterns: Vec<EventPath>) -> Result<(), String> {
    let (client, mut events) = connect(server, &args.login, "rivulet-sub", |options| {
        options.subscriptions = patterns;
        options.persisted = args.persisted;
        options.server_id = args.server_id;
    })
    .await?;
    print_until(&mut events, args.count).await;
    client.close().await;
    Ok(())
}

pub(super) async fn query(server: &str, login: &Login, query: Query) -> Result<(), String> {
    let (client, _events) = connect(server, login, "rivulet-query", |_| {}).await?;
    let events = query_events(query, |page| client.query(page), |all| client.query_all(all)).await;
    client.close().await;
    print_events(&events.map_err(|e| format!("query failed: {e}"))?);
    Ok(())
}

/// Prints the server's status (all a hat server tells a client about itself) as JSON.
pub(super) async fn status(server: &str, login: &Login) -> Result<(), String> {
    let (client, _events) = connect(server, login, "rivulet-status", |_| {}).await?;
    let status = match client.status() {
        Status::Standby => "standby",
        Status::Starting => "starting",
        Status::Operational => "operational",
        Status::Stopping => "stopping",
    };
    client.close().await;
    crate::out!("{}", serde_json::json!({ "server": server, "protocol": "hat", "status": status }));
    Ok(())
}
