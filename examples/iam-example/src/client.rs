//! A small JSON-over-HTTP client of the service ([`crate::http`]): one
//! request, its status, headers and JSON body. The tests and the load
//! generator send their requests with it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built (a bad URL or header).
    #[error("cannot build the request {what}: {source}")]
    Request {
        /// Method and URL.
        what: String,
        /// Why.
        source: hyper::http::Error,
    },
    /// No connection, or the connection broke.
    #[error("{what}: {source}")]
    Send {
        /// Method and URL.
        what: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within the client's timeout.
    #[error("{what}: no answer within {timeout:?}")]
    TimedOut {
        /// Method and URL.
        what: String,
        /// The timeout.
        timeout: Duration,
    },
}

/// An answer: status, headers and the body (JSON when it parses, else
/// `Value::Null`, with the text kept).
#[derive(Debug, Clone)]
pub struct JsonResponse {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl JsonResponse {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A pooled HTTP/1 client with a per-request timeout.
#[derive(Clone)]
pub struct JsonClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for JsonClient {
    fn default() -> Self {
        JsonClient::new(Duration::from_secs(30))
    }
}

impl JsonClient {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        JsonClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout,
        }
    }

    /// Sends `method url` with `headers` and, when given, `body` as JSON.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<JsonResponse, HttpError> {
        let what = format!("{method} {url}");
        let mut request = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|source| HttpError::Request {
                what: what.clone(),
                source,
            })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| HttpError::Send {
                        what: what.clone(),
                        source: Box::new(source),
                    })?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|source| HttpError::Send {
                    what: what.clone(),
                    source: Box::new(source),
                })?
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Ok(JsonResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                json: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(HttpError::TimedOut {
                what,
                timeout: self.timeout,
            }),
        }
    }
}
