//! The agent half of the envd client: the ACP bridge's routes
//! (`kiln_types::agent`), spoken the same way by the server and the tests.

use bytes::Bytes;
use futures::Stream;
use http::{Method, Request, header};
use http_body_util::Full;
use kiln_types::agent::{
    AgentStatus, InitializeRequest, InitializeResponse, NewSessionRequest, NewSessionResponse, PromptRequest,
    SetConfigRequest, SetConfigResponse, SetModelRequest,
};
use kiln_types::chat::ChatEvent;
use serde::Serialize;

use crate::envd_client::{ClientError, EnvdClient, enc};

fn body(v: &impl Serialize) -> Result<Bytes, ClientError> {
    Ok(Bytes::from(serde_json::to_vec(v)?))
}

impl EnvdClient {
    pub async fn agent_status(&self) -> Result<AgentStatus, ClientError> {
        self.json(Method::GET, "/v1/agent", Bytes::new()).await
    }

    pub async fn agent_initialize(&self, req: &InitializeRequest) -> Result<InitializeResponse, ClientError> {
        self.json(Method::POST, "/v1/agent/initialize", body(req)?).await
    }

    pub async fn agent_new_session(&self, req: &NewSessionRequest) -> Result<NewSessionResponse, ClientError> {
        self.json(Method::POST, "/v1/agent/sessions", body(req)?).await
    }

    pub async fn agent_set_model(&self, session: &str, model_id: &str) -> Result<SetConfigResponse, ClientError> {
        let req = SetModelRequest { model_id: model_id.to_owned() };
        self.json(Method::POST, &format!("/v1/agent/sessions/{}/model", enc(session)), body(&req)?).await
    }

    pub async fn agent_set_config(
        &self,
        session: &str,
        req: &SetConfigRequest,
    ) -> Result<SetConfigResponse, ClientError> {
        self.json(Method::POST, &format!("/v1/agent/sessions/{}/config", enc(session)), body(req)?).await
    }

    /// Starts a turn and streams its events, ending with `done`.
    pub async fn agent_prompt(
        &self,
        session: &str,
        text: &str,
    ) -> Result<impl Stream<Item = Result<ChatEvent, ClientError>> + use<>, ClientError> {
        let req = PromptRequest { text: text.to_owned() };
        let r = Request::post(format!("/v1/agent/sessions/{}/prompt", enc(session)))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body(&req)?))?;
        self.stream(r).await
    }

    pub async fn agent_cancel(&self, session: &str) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/agent/sessions/{}/cancel", enc(session)), Bytes::new()).await.map(drop)
    }

    /// Events with `seq > after`; with `follow`, until the running turn ends.
    pub async fn agent_events(
        &self,
        session: &str,
        after: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<ChatEvent, ClientError>> + use<>, ClientError> {
        let r = Request::get(format!("/v1/agent/sessions/{}/events?after={after}&follow={follow}", enc(session)))
            .body(Full::new(Bytes::new()))?;
        self.stream(r).await
    }
}
