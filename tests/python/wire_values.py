"""Dramatiq's half of the value round trips in tests/it/wire_values.rs; needs no Redis.

Reads cases from stdin, three lines each: a Python literal of a value to send, a literal of
the value the Rust side holds after decoding it (they differ only where Rust's JSON cannot
hold a value: big ints, inf, nan), and a message the Rust encoder wrote with that held value
as args[0], kwargs["v"] and options["o"]. Prints two lines per case: the message Dramatiq
encodes for the sent value, then "ok" if Dramatiq decodes the Rust message to exactly the
held value (same types, floats by repr), else what it got.
"""

import sys

import dramatiq


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)  # tells -0.0 from 0.0, and nan equals nan
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def value(literal):
    # The literals come from the test: plain Python values, and float(...) for floats.
    return eval(literal, {"__builtins__": {}}, {"float": float})


sys.stdout.reconfigure(encoding="utf-8")
lines = sys.stdin.buffer.read().decode("utf-8").split("\n")
for sent, held, ours in zip(lines[0::3], lines[1::3], lines[2::3]):
    sent, held = value(sent), value(held)
    theirs = dramatiq.Message(
        queue_name="wire",
        actor_name="wire_values",
        args=(sent,),
        kwargs={"v": sent},
        options={"o": sent},
        message_id="m",
        message_timestamp=1,
    )
    print(theirs.encode().decode("utf-8"))
    try:
        decoded = dramatiq.Message.decode(ours.encode("utf-8"))
        got = [decoded.args[0], decoded.kwargs["v"], decoded.options["o"]]
    except Exception as e:  # one line per case whatever happens, so the cases stay aligned
        print(f"Dramatiq cannot decode it: {e!r}")
        continue
    print("ok" if all(same(g, held) for g in got) else f"got {got!r}, expected {held!r}")
