"""Which certify requests send their message ahead of their submission (``app.ahead``): only
one alone for its model in this process, after a spell of requests that did not overlap, of a
key whose last submission was taken; and when the API sends it again."""

from __future__ import annotations

from app.ahead import AheadSending


def test_only_a_lone_request_after_a_spell_of_lone_ones_sends_ahead() -> None:
    sending = AheadSending(0.1)
    with sending.request("key-1", "model-1") as first:
        with sending.request("key-2", "model-1") as second:  # another one in flight
            assert first and not second
        with sending.request("key-1", "model-2") as other_model:
            assert other_model
    # right after a crowded spell (a batch answered together): not yet
    with sending.request("key-1", "model-1") as after_crowd:
        assert not after_crowd
    with sending.request("key-1", "model-1") as after_lone, \
            sending.request("key-1", "model-2") as other_spell:
        assert after_lone and other_spell


def test_a_key_refused_by_the_quota_sends_none_ahead_until_one_is_taken() -> None:
    sending = AheadSending(0.1)
    sending.submitted("key-1", taken=False)
    with sending.request("key-1", "model-1") as refused:
        assert not refused
    with sending.request("key-2", "model-1") as other_key:
        assert other_key
    sending.submitted("key-1", taken=True)
    with sending.request("key-1", "model-1") as taken_again:
        assert taken_again


def test_none_is_sent_ahead_without_a_wait_and_a_late_one_is_sent_again() -> None:
    with AheadSending(0.0).request("key", "model") as lone:
        assert not lone
    sending = AheadSending(0.1)
    assert not sending.late(0.05) and sending.late(0.0501)
