//! The S3 port: read an object as a stream, write a small object. [`S3Objects`] puts it on the
//! AWS SDK (GetObject's `ByteStream` as an `AsyncRead`: the body is never held whole);
//! [`MemoryObjects`] is its in-memory twin for unit tests.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::AsyncRead;

/// An object body being read.
pub type BodyReader = Pin<Box<dyn AsyncRead + Send>>;

/// An object opened for reading.
pub struct OpenedObject {
    pub body: BodyReader,
    /// Without quotes.
    pub etag: Option<String>,
    pub size: Option<u64>,
    /// RFC 3339.
    pub last_modified: Option<String>,
}

/// What an S3 call can fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ObjectError {
    /// No such object (deleted since the event): nothing to import.
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    /// The object is no longer the one the event announced (`If-Match` failed): a newer event follows.
    #[error("s3://{bucket}/{key} changed since the event")]
    Changed { bucket: String, key: String },
    /// Anything else (network, permissions, throttling): retry.
    #[error("S3 {operation} s3://{bucket}/{key} failed: {message}")]
    Failed {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
}

/// The S3 capability an import needs.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Opens an object for streaming. With `if_match`, fails with [`ObjectError::Changed`]
    /// when the object's eTag is another one.
    async fn open(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<OpenedObject, ObjectError>;
    /// Reads a small object whole (a report); `None` when absent.
    async fn read_small(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, ObjectError>;
    /// Writes an object.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ObjectError>;
}

// ------------------------------------------------------------------------------- AWS

/// The port on the AWS SDK.
#[derive(Clone)]
pub struct S3Objects {
    client: aws_sdk_s3::Client,
}

impl S3Objects {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        S3Objects { client }
    }
}

/// The S3 client for an SDK config: path-style when `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`
/// points at a local S3 (moto serves buckets under its path, not as subdomains).
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let local = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(local)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn failed(
    operation: &'static str,
    bucket: &str,
    key: &str,
    e: impl std::fmt::Display,
) -> ObjectError {
    ObjectError::Failed {
        operation,
        bucket: bucket.to_string(),
        key: key.to_string(),
        message: e.to_string(),
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn open(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<OpenedObject, ObjectError> {
        let mut request = self.client.get_object().bucket(bucket).key(key);
        if let Some(etag) = if_match {
            request = request.if_match(format!("\"{etag}\""));
        }
        match request.send().await {
            Ok(out) => Ok(OpenedObject {
                etag: out.e_tag().map(|e| e.trim_matches('"').to_string()),
                size: out.content_length().and_then(|n| u64::try_from(n).ok()),
                last_modified: out
                    .last_modified()
                    .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()),
                body: Box::pin(out.body.into_async_read()),
            }),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_no_such_key()) || status == Some(404) {
                    Err(ObjectError::NotFound {
                        bucket: bucket.into(),
                        key: key.into(),
                    })
                } else if status == Some(412) {
                    Err(ObjectError::Changed {
                        bucket: bucket.into(),
                        key: key.into(),
                    })
                } else {
                    Err(failed(
                        "GetObject",
                        bucket,
                        key,
                        aws_sdk_s3::error::DisplayErrorContext(&e),
                    ))
                }
            }
        }
    }

    async fn read_small(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        match self.open(bucket, key, None).await {
            Ok(mut object) => {
                let mut buf = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut object.body, &mut buf)
                    .await
                    .map_err(|e| failed("GetObject", bucket, key, e))?;
                Ok(Some(buf))
            }
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                failed(
                    "PutObject",
                    bucket,
                    key,
                    aws_sdk_s3::error::DisplayErrorContext(&e),
                )
            })
    }
}

// ------------------------------------------------------------------------------- memory

/// Stored objects: (bucket, key) -> (body, eTag).
type ObjectMap = HashMap<(String, String), (Vec<u8>, String)>;

/// In-memory twin: objects by (bucket, key); eTags are a counter, as a new upload changes it.
#[derive(Clone, Default)]
pub struct MemoryObjects {
    objects: Arc<Mutex<ObjectMap>>,
    counter: Arc<Mutex<u64>>,
    /// Fail every `open` with this error (an outage).
    pub fail_open: Arc<Mutex<Option<ObjectError>>>,
}

impl MemoryObjects {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores an object; returns its eTag.
    pub fn insert(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) -> String {
        let mut counter = self.counter.lock().unwrap();
        *counter += 1;
        let etag = format!("etag-{}", *counter);
        self.objects
            .lock()
            .unwrap()
            .insert((bucket.into(), key.into()), (body.into(), etag.clone()));
        etag
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .unwrap()
            .get(&(bucket.to_string(), key.to_string()))
            .map(|(b, _)| b.clone())
    }
}

#[async_trait]
impl ObjectStore for MemoryObjects {
    async fn open(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<OpenedObject, ObjectError> {
        if let Some(e) = self.fail_open.lock().unwrap().clone() {
            return Err(e);
        }
        let found = self
            .objects
            .lock()
            .unwrap()
            .get(&(bucket.to_string(), key.to_string()))
            .cloned();
        let (body, etag) = found.ok_or_else(|| ObjectError::NotFound {
            bucket: bucket.into(),
            key: key.into(),
        })?;
        if if_match.is_some_and(|m| m != etag) {
            return Err(ObjectError::Changed {
                bucket: bucket.into(),
                key: key.into(),
            });
        }
        Ok(OpenedObject {
            size: Some(body.len() as u64),
            etag: Some(etag),
            last_modified: None,
            body: Box::pin(std::io::Cursor::new(body)),
        })
    }

    async fn read_small(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        Ok(self.get(bucket, key))
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
    ) -> Result<(), ObjectError> {
        self.insert(bucket, key, body);
        Ok(())
    }
}
