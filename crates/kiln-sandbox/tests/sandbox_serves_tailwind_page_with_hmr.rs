//! A sandbox serves the template's React page with Tailwind styles through
//! envd's port proxy, and Vite's HMR WebSocket works through it: a file
//! written through envd arrives as an HMR update on the socket.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kiln_sandbox::graph::proxy_get;
use kiln_types::envd::DEV_SERVER_PORT;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread")]
async fn page_css_and_hmr_update_through_the_port_proxy() {
    let env = require_env!();
    let sb = support::Guard::new(env, kiln_types::SandboxSpec::app()).await;
    sb.wait_dev_ready().await;
    let client = sb.client();

    let (status, html) = proxy_get(&client, DEV_SERVER_PORT, "/").await.unwrap();
    assert_eq!(status, 200);
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains(r#"<div id="root"></div>"#), "{html}");
    assert!(html.contains("/src/main.tsx"));

    // The page's heading uses `text-4xl`; Tailwind must have generated it.
    let (status, css) = proxy_get(&client, DEV_SERVER_PORT, "/src/index.css?direct").await.unwrap();
    assert_eq!(status, 200);
    let css = String::from_utf8_lossy(&css);
    assert!(css.contains(".text-4xl"), "Tailwind utility missing from served CSS");
    assert!(css.contains(".min-h-screen"));

    let (_, app) = proxy_get(&client, DEV_SERVER_PORT, "/src/App.tsx").await.unwrap();
    assert!(String::from_utf8_lossy(&app).contains("Your app starts here"));

    // Vite's HMR socket needs the token embedded in its client module.
    let (_, vite_client) = proxy_get(&client, DEV_SERVER_PORT, "/@vite/client").await.unwrap();
    let vite_client = String::from_utf8_lossy(&vite_client);
    let token =
        vite_client.split("wsToken = \"").nth(1).and_then(|s| s.split('"').next()).expect("vite client has a wsToken");

    let stream = tokio::net::UnixStream::connect(client.socket()).await.unwrap();
    let mut req = format!("ws://localhost/v1/proxy/{DEV_SERVER_PORT}/?token={token}").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", client.endpoint().token).parse().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.expect("websocket through the proxy");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "vite-hmr");

    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("connected"), "{first:?}");

    let new_app = r#"export default function App() {
  return <h1 className="text-5xl">Edited through envd</h1>;
}
"#;
    client.write_file("src/App.tsx", new_app).await.unwrap();

    let update = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(msg) = ws.next().await {
            if let Message::Text(t) = msg.unwrap()
                && t.contains("\"update\"")
                && t.contains("/src/App.tsx")
            {
                return t.to_string();
            }
        }
        panic!("socket closed before the update arrived");
    })
    .await
    .expect("HMR update within 15 s");
    assert!(update.contains("js-update"), "{update}");
    let _ = ws.close(None).await;
    let _ = ws.send(Message::Close(None)).await;

    let (_, app) = proxy_get(&client, DEV_SERVER_PORT, "/src/App.tsx").await.unwrap();
    assert!(String::from_utf8_lossy(&app).contains("Edited through envd"));
}
