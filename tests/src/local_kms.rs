//! A real KMS-compatible server on 127.0.0.1: `moto_server` (moto, from PyPI; the test command installs it
//! into `target/venv-test`), with one symmetric key made for the test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::procs::Proc;
use crate::{free_port, repo_root};

/// A running server and its key; stopped when dropped.
pub struct LocalKms {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The key's ARN.
    pub key_arn: String,
    _server: Proc,
}

/// `moto_server`: `CDP_MOTO_SERVER`, else the test command's virtual environment, else the `PATH`.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("CDP_MOTO_SERVER") {
        return path.into();
    }
    let venv = repo_root().join("target/venv-test/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|path| path.exists());
    found.unwrap_or_else(|| {
        panic!("moto_server is missing: run the README's test command, or `pip install 'moto[server]'`")
    })
}

impl LocalKms {
    /// Starts the server on a free port and makes a symmetric key (`TrentService.CreateKey`).
    pub fn start() -> Self {
        let port = free_port();
        let mut command = Command::new(moto_server());
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut server = Proc::spawn("moto-kms", command);
        let endpoint = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let created = loop {
            server.alive().unwrap_or_else(|e| panic!("moto_server: {e}"));
            let reply = crate::http::send(
                "POST",
                &format!("{endpoint}/"),
                br#"{"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT", "Description": "cdp test"}"#,
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "TrentService.CreateKey"),
                    // moto routes by the signing service in the authorization header.
                    (
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kms/aws4_request, \
                         SignedHeaders=host, Signature=0",
                    ),
                ],
            );
            match reply {
                Ok(reply) if reply.status == 200 => break reply.json(),
                Ok(reply) if started.elapsed() > Duration::from_secs(60) => {
                    panic!("moto_server answered CreateKey {}: {}\n{}", reply.status, reply.body, server.log_tail())
                }
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    panic!("moto_server did not start within 60 s: {e}\n{}", server.log_tail())
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        };
        let key_arn = created["KeyMetadata"]["Arn"].as_str().expect("the new key's ARN").to_string();
        Self { endpoint, key_arn, _server: server }
    }

    /// Settings for `functions::vault` with the local S3 server's test credentials.
    pub fn settings(&self) -> functions::vault::KmsSettings {
        functions::vault::KmsSettings {
            key_id: self.key_arn.clone(),
            endpoint: Some(self.endpoint.clone()),
            access: crate::local_s3::access(),
        }
    }
}
