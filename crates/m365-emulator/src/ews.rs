//! Exchange Web Services. Only the fault answer exists so far (faults on the `ews` endpoint); the
//! SOAP operations themselves are not served yet (see the README).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// EWS's answer to throttling and injected faults: a SOAP fault `ErrorServerBusy` (HTTP 500),
/// with `BackOffMilliseconds` when a retry delay is known.
pub(crate) fn fault_response(status: StatusCode, retry_after: Option<u64>) -> Response {
    let detail = retry_after
        .map(|s| {
            format!(
                "<detail><e:ResponseCode xmlns:e=\"http://schemas.microsoft.com/exchange/services/2006/errors\">ErrorServerBusy</e:ResponseCode>\
                 <e:MessageXml xmlns:e=\"http://schemas.microsoft.com/exchange/services/2006/errors\"><t:Value xmlns:t=\"http://schemas.microsoft.com/exchange/services/2006/types\" Name=\"BackOffMilliseconds\">{}</t:Value></e:MessageXml></detail>",
                s * 1000
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault>\
         <faultcode xmlns:a=\"http://schemas.microsoft.com/exchange/services/2006/types\">a:ErrorServerBusy</faultcode>\
         <faultstring xml:lang=\"en-US\">The server cannot service this request right now. Try again later.</faultstring>{detail}</s:Fault></s:Body></s:Envelope>"
    );
    let status = if status == StatusCode::TOO_MANY_REQUESTS { StatusCode::INTERNAL_SERVER_ERROR } else { status };
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"));
    r
}
