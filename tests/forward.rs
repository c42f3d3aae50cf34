//! Forward mode: snapgate authenticates the terminal and runs the refresh flow, and relays the
//! transaction to an upstream CWS endpoint: here a small upstream started by the test.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    requests: Vec<(String, String)>,
}

/// An upstream that answers every request with `reply` (status, body) and records it.
async fn upstream(status: u16, reply: &'static str) -> (std::net::SocketAddr, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        async move {
                            let action = req
                                .headers()
                                .get("soapaction")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            s.lock()
                                .unwrap()
                                .requests
                                .push((action, String::from_utf8(body.to_vec()).unwrap()));
                            let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                                reply.as_bytes(),
                            )));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut()
                                .insert("content-type", "text/xml; charset=utf-8".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

const UPSTREAM_OK: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><AuthorizeAndCaptureResponse xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"><AuthorizeAndCaptureResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:b="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard" xmlns:bp="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard/Pro" i:type="bp:BankcardTransactionResponsePro"><Status xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions">Successful</Status><StatusCode xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions">000</StatusCode><TransactionId xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions">CCED01ACF1F44E5A8DAE8E956EFD1DE5</TransactionId><b:MaskedPAN>545454XXXXXX5454</b:MaskedPAN></AuthorizeAndCaptureResult></AuthorizeAndCaptureResponse></s:Body></s:Envelope>"#;

const UPSTREAM_FAULT: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>nope</faultstring><detail><CWSFault xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions/Faults"><ErrorID>326</ErrorID><ProblemType>upstream says no</ProblemType></CWSFault></detail></s:Fault></s:Body></s:Envelope>"#;

#[tokio::test]
async fn forward_mode_relays_the_transaction_and_still_runs_the_refresh_flow() {
    let (addr, seen) = upstream(200, UPSTREAM_OK).await;
    let srv = TestServer::start_with(|c| {
        c.processor.mode = snapgate::config::ProcessorMode::Forward;
        c.processor.upstream_url = Some(format!("http://{addr}/2.1.32/TPS.svc"));
        c.processor.upstream_session_token = Some("UPSTREAM-SESSION".into());
    })
    .await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    let r = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 2), "10.00")
        .await;
    r.assert_ok();
    assert_eq!(
        r.text_of("TransactionId").as_deref(),
        Some("CCED01ACF1F44E5A8DAE8E956EFD1DE5")
    );
    assert_eq!(
        find(&r.xml(), "AuthorizeAndCaptureResult")
            .unwrap()
            .type_name(),
        Some("BankcardTransactionResponsePro")
    );
    assert_eq!(r.renewed_token(), None);
    {
        let seen = seen.lock().unwrap();
        let (action, body) = &seen.requests[0];
        assert_eq!(
            action,
            &format!("\"{}\"", tps_action("AuthorizeAndCapture"))
        );
        assert!(body.contains("UPSTREAM-SESSION"), "{body}");
        assert!(
            !body.contains(&tok),
            "the terminal's token is not sent upstream"
        );
        assert!(body.contains("SecurePaymentAccountData"), "{body}");
    }
    // Day 30: the relayed response carries the renewed token too.
    srv.advance_days(30);
    let r = srv
        .swipe("AuthorizeAndCapture", &tok, &ksn(TDES_KSN_BASE, 3), "10.00")
        .await;
    assert!(r.assert_ok().renewed_token().is_some());
    // Authentication still happens locally: a bad token never reaches the upstream.
    let before = seen.lock().unwrap().requests.len();
    srv.swipe(
        "AuthorizeAndCapture",
        "garbage",
        &ksn(TDES_KSN_BASE, 4),
        "1.00",
    )
    .await
    .assert_fault("InvalidTokenFault", 5005);
    assert_eq!(seen.lock().unwrap().requests.len(), before);
}

#[tokio::test]
async fn upstream_faults_are_relayed_and_an_unreachable_upstream_is_a_connection_fault() {
    let (addr, _) = upstream(500, UPSTREAM_FAULT).await;
    let srv = TestServer::start_with(|c| {
        c.processor.mode = snapgate::config::ProcessorMode::Forward;
        c.processor.upstream_url = Some(format!("http://{addr}/TPS.svc"));
    })
    .await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    let r = srv
        .swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await;
    r.assert_fault("CWSFault", 326);
    assert_eq!(
        r.text_of("ProblemType").as_deref(),
        Some("upstream says no")
    );

    // Nothing listens on this port.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let srv = TestServer::start_with(|c| {
        c.processor.mode = snapgate::config::ProcessorMode::Forward;
        c.processor.upstream_url = Some(format!("http://{dead}/TPS.svc"));
        c.processor.upstream_timeout_ms = 2_000;
    })
    .await;
    let tok = srv
        .register_ok(&ksn(TDES_KSN_BASE, 1), "MP1|B1234567")
        .await;
    srv.swipe("Authorize", &tok, &ksn(TDES_KSN_BASE, 2), "1.00")
        .await
        .assert_fault("CWSConnectionFault", 328);
}
