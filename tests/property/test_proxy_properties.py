"""Any bytes are a PROXY v2 header, a prefix of one, not one, or a documented error."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtcs.protocol.proxy import MAX_HEADER, SIGNATURE, ProxyHeader, ProxyHeaderError, Verdict, parse


@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: SIGNATURE + b)))
def test_any_bytes_are_accepted_or_rejected_with_the_documented_error(data: bytes) -> None:
    try:
        found = parse(data)
    except ProxyHeaderError:
        assert data.startswith(SIGNATURE)
        return
    if isinstance(found, ProxyHeader):
        assert 16 <= found.length <= min(len(data), MAX_HEADER)
    elif found is Verdict.INCOMPLETE:
        assert SIGNATURE.startswith(data[:12])
    else:
        assert found is Verdict.ABSENT
        assert not SIGNATURE.startswith(data[:12])
