//! The ECS task this agent runs in, from the task metadata endpoint version 4
//! (`ECS_CONTAINER_METADATA_URI_V4`, which ECS sets in every container on EC2 and Fargate):
//! cluster, task ARN, availability zone, family and revision, and launch type. Read once at start
//! with a short timeout; outside ECS (the variable unset) there is nothing to read, and a failed
//! read is logged and leaves the agent without it rather than stopping it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// The variable ECS sets.
pub const ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// Limit of the whole read.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read (a task's metadata is a few kilobytes).
const MAX_BYTES: usize = 1 << 20;

/// What edge shows of its task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The cluster's ARN or name.
    #[serde(rename(deserialize = "Cluster"))]
    pub cluster: String,
    /// The task's ARN.
    #[serde(rename(deserialize = "TaskARN"))]
    pub task_arn: String,
    /// The availability zone.
    #[serde(rename(deserialize = "AvailabilityZone"), default)]
    pub availability_zone: String,
    /// The task definition's family.
    #[serde(rename(deserialize = "Family"), default)]
    pub family: String,
    /// The task definition's revision.
    #[serde(rename(deserialize = "Revision"), default)]
    pub revision: String,
    /// `EC2` or `FARGATE` (absent on older agents).
    #[serde(rename(deserialize = "LaunchType"), default)]
    pub launch_type: String,
}

/// Why the metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// The variable is not an `http://HOST:PORT/PATH` URL.
    #[error("{ENV}={0} is not an http:// URL")]
    Url(String),
    /// The request failed or timed out.
    #[error("cannot read the task metadata from {url}: {reason}")]
    Fetch {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer is not the documented JSON.
    #[error("the task metadata from {url} is not the documented JSON: {reason}")]
    Json {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Reads the task metadata when `ECS_CONTAINER_METADATA_URI_V4` is set (`Ok(None)` otherwise).
pub async fn read() -> Result<Option<Task>, EcsError> {
    match std::env::var(ENV) {
        Ok(base) if !base.trim().is_empty() => fetch(base.trim()).await.map(Some),
        _ => Ok(None),
    }
}

/// `GET {base}/task` and its answer.
pub async fn fetch(base: &str) -> Result<Task, EcsError> {
    let rest = base.strip_prefix("http://").ok_or_else(|| EcsError::Url(base.to_string()))?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(EcsError::Url(base.to_string()));
    }
    let url =
        format!("http://{authority}/{}", if path.is_empty() { "task".to_string() } else { format!("{path}/task") });
    let fail = |reason: String| EcsError::Fetch { url: url.clone(), reason };
    let body = tokio::time::timeout(TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(authority).await.map_err(|e| fail(e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path_only = url.trim_start_matches("http://").trim_start_matches(authority);
        let req = http::Request::get(path_only)
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
        if resp.status() != http::StatusCode::OK {
            return Err(fail(format!("status {}", resp.status())));
        }
        Limited::new(resp.into_body(), MAX_BYTES).collect().await.map(|b| b.to_bytes()).map_err(|e| fail(e.to_string()))
    })
    .await
    .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))??;
    serde_json::from_slice(&body).map_err(|e| EcsError::Json { url: url.clone(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from the "Task metadata v4 JSON response" example in the ECS developer guide.
    const DOCUMENTED: &str = r#"{
        "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
        "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c",
        "Family": "curltest", "ServiceName": "MyService", "Revision": "26",
        "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.25, "Memory": 512},
        "PullStartedAt": "2020-10-02T00:43:06.202617438Z",
        "AvailabilityZone": "us-west-2d", "LaunchType": "EC2",
        "Containers": []
    }"#;

    #[test]
    fn the_documented_answer_reads() {
        let t: Task = serde_json::from_str(DOCUMENTED).unwrap();
        assert_eq!(t.cluster, "arn:aws:ecs:us-west-2:111122223333:cluster/default");
        assert!(t.task_arn.ends_with("/158d1c8083dd49d6b527399fd6414f5c"));
        assert_eq!(
            (t.availability_zone.as_str(), t.family.as_str(), t.revision.as_str()),
            ("us-west-2d", "curltest", "26")
        );
        assert_eq!(t.launch_type, "EC2");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["task_arn"], t.task_arn, "shown in the agent's own snake case");
    }

    #[tokio::test]
    async fn bad_urls_are_named() {
        assert!(matches!(fetch("https://x").await, Err(EcsError::Url(_))));
        assert!(matches!(fetch("http://").await, Err(EcsError::Url(_))));
    }
}
