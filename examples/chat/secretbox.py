"""NaCl secretbox (XSalsa20-Poly1305) in pure Python, to publish on `private-encrypted-` channels.

Herald never sees the plaintext of an encrypted channel: the backend seals each event with the
channel's shared secret, exactly as the Pusher server SDKs do, and the browser opens it (tweetnacl's
`secretbox.open`). The Python standard library has no XSalsa20, so here it is; it is slow (pure
Python), which is fine for chat-sized messages.

>>> key = bytes(range(32)); nonce = bytes(range(24))
>>> box = seal(b"hello", nonce, key)
>>> len(box), open_box(box, nonce, key)
(21, b'hello')
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from typing import Any

_M = 0xFFFFFFFF
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"


def _rotl(v: int, c: int) -> int:
    v &= _M
    return ((v << c) & _M) | (v >> (32 - c))


def _rounds(x: list[int]) -> list[int]:
    x = list(x)

    def qr(a: int, b: int, c: int, d: int) -> None:
        x[b] ^= _rotl(x[a] + x[d], 7)
        x[c] ^= _rotl(x[b] + x[a], 9)
        x[d] ^= _rotl(x[c] + x[b], 13)
        x[a] ^= _rotl(x[d] + x[c], 18)

    for _ in range(10):
        qr(0, 4, 8, 12); qr(5, 9, 13, 1); qr(10, 14, 2, 6); qr(15, 3, 7, 11)  # columns
        qr(0, 1, 2, 3); qr(5, 6, 7, 4); qr(10, 11, 8, 9); qr(15, 12, 13, 14)  # rows
    return x


def _words(b: bytes) -> list[int]:
    return [int.from_bytes(b[i:i + 4], "little") for i in range(0, len(b), 4)]


def _state(key: bytes, inp: bytes) -> list[int]:
    k, n = _words(key), _words(inp)
    return [_SIGMA[0], *k[:4], _SIGMA[1], *n, _SIGMA[2], *k[4:], _SIGMA[3]]


def _hsalsa20(key: bytes, inp16: bytes) -> bytes:
    z = _rounds(_state(key, inp16))
    return b"".join(z[i].to_bytes(4, "little") for i in (0, 5, 10, 15, 6, 7, 8, 9))


def _salsa20_stream(key: bytes, nonce8: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        x = _state(key, nonce8 + counter.to_bytes(8, "little"))
        z = _rounds(x)
        out += b"".join(((a + b) & _M).to_bytes(4, "little") for a, b in zip(z, x))
        counter += 1
    return bytes(out[:length])


def _poly1305(msg: bytes, key: bytes) -> bytes:
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        acc = ((acc + int.from_bytes(msg[i:i + 16] + b"\x01", "little")) * r) % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def seal(message: bytes, nonce: bytes, key: bytes) -> bytes:
    """tweetnacl's `secretbox(message, nonce, key)`: the 16-byte tag, then the ciphertext."""
    assert len(nonce) == 24 and len(key) == 32
    stream = _salsa20_stream(_hsalsa20(key, nonce[:16]), nonce[16:], 32 + len(message))
    ciphertext = _xor(message, stream[32:])
    return _poly1305(ciphertext, stream[:32]) + ciphertext


def open_box(box: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """tweetnacl's `secretbox.open`: the message, or None when the tag does not match."""
    if len(box) < 16:
        return None
    tag, ciphertext = box[:16], box[16:]
    stream = _salsa20_stream(_hsalsa20(key, nonce[:16]), nonce[16:], 32 + len(ciphertext))
    if not hmac.compare_digest(tag, _poly1305(ciphertext, stream[:32])):
        return None
    return _xor(ciphertext, stream[32:])


def encrypt_event(shared_secret_b64: str, data: Any) -> dict[str, str]:
    """The event data for a `private-encrypted-` channel, as the Pusher server SDKs make it:
    `{"nonce", "ciphertext"}` (base64) sealing the JSON of `data`."""
    nonce = os.urandom(24)
    box = seal(json.dumps(data).encode(), nonce, base64.b64decode(shared_secret_b64))
    return {"nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(box).decode()}
