//! The API server's errors as one line a user can read: kube's own `Display` of an API error
//! appends the whole `Status` structure in `Debug` form, which is no message for a condition,
//! an event or a log line.

/// `poddisruptionbudgets.policy is forbidden: … (HTTP 403 Forbidden)`, or the client error's
/// own message for errors that never reached the server, always on one line.
pub fn one_line(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "the API server refused the request"
            } else {
                status.message.as_str()
            };
            match (status.code, status.reason.as_str()) {
                (0, "") => message.to_string(),
                (0, reason) => format!("{message} ({reason})"),
                (code, "") => format!("{message} (HTTP {code})"),
                (code, reason) => format!("{message} (HTTP {code} {reason})"),
            }
        }
        other => other.to_string(),
    };
    flatten(&text)
}

/// Joins the lines of a message with spaces.
pub fn flatten(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn an_api_error_is_its_message_and_code() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "poddisruptionbudgets.policy \"x\" is forbidden:\n  User \"u\" cannot create",
            "reason": "Forbidden",
            "code": 403
        }))
        .unwrap();
        let error = kube::Error::Api(Box::new(status));
        assert_eq!(
            one_line(&error),
            "poddisruptionbudgets.policy \"x\" is forbidden: User \"u\" cannot create (HTTP 403 Forbidden)"
        );
        assert!(
            !error.to_string().eq(&one_line(&error)),
            "kube's own Display is the dump"
        );
    }

    #[test]
    fn an_empty_status_still_reads() {
        let error = kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({"code": 404})).unwrap(),
        ));
        assert_eq!(one_line(&error), "the API server refused the request (HTTP 404)");
    }
}
