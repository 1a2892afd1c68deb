//! The request states' text, both ways.

use super::RequestState;

#[test]
fn request_states_read_back_as_written() {
    for s in [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Void,
        RequestState::Superseded,
        RequestState::Used,
    ] {
        assert_eq!(RequestState::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::json!(s), serde_json::json!(s.as_str()));
    }
    assert_eq!(RequestState::parse("Pending"), None);
}
