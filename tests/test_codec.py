"""Payload encryption (lockmaster/temporal/codec.py): AES-GCM round trips, key rotation, unknown
key ids and changed ciphertexts refused with the reason, the key file's format and permissions,
and a check run on the real dev server whose history, read without the key, holds no clear text
of what the workflow was given."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from typer.testing import CliRunner

from lockmaster.cli.main import app
from lockmaster.config.codec import CodecConfig
from lockmaster.model.gate import DequeueRequest
from lockmaster.temporal.client import TemporalConfigError, connect, data_converter
from lockmaster.temporal.codec import (
    CodecError,
    EncryptionCodec,
    KeyFileError,
    UnknownKeyError,
    load_keys,
    parse_keys,
)
from tests.deployment import deployment, make_config, unique_project

KEY = "A" * 43 + "="  # 32 bytes


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def key_file(path: Path, *ids: str, keys: dict[str, str] | None = None) -> Path:
    keys = keys if keys is not None else {i: new_key() for i in ids}
    path.write_text("# lockmaster codec keys: the first encrypts\n"
                    + "".join(f"{i}: {k}\n" for i, k in keys.items()))
    path.chmod(0o600)
    return path


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_round_trip_hides_the_data_and_restores_it(tmp_path: Path) -> None:
    codec = EncryptionCodec(load_keys(key_file(tmp_path / "keys", "k1")))
    originals = [plain("the cloud password is hunter2"), plain("second")]
    sealed = await codec.encode(originals)
    assert [p.metadata["encoding"] for p in sealed] == [b"binary/encrypted"] * 2
    assert [p.metadata["encryption-key-id"] for p in sealed] == [b"k1"] * 2
    assert all(b"hunter2" not in p.SerializeToString() for p in sealed)
    assert await codec.decode(sealed) == originals
    # A fresh nonce per payload: the same payload twice is two different ciphertexts.
    again = await codec.encode(originals[:1])
    assert again[0].data != sealed[0].data
    assert await codec.decode(again) == originals[:1]


async def test_pydantic_models_go_through_the_converter_encrypted(tmp_path: Path) -> None:
    config = make_config(tmp_path, projects=[], jobs=[])
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    converter = data_converter(config)
    assert converter.payload_codec is not None
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    request = DequeueRequest(project="p", number=7, reason="the secret reason")
    [payload] = await converter.encode([request])
    assert b"the secret reason" not in payload.SerializeToString()
    assert await converter.decode([payload], [DequeueRequest]) == [request]
    # Without a codec the converter is the plain pydantic one, unchanged.
    config.codec = None
    assert data_converter(config) is pydantic_data_converter


async def test_rotation_new_key_encrypts_old_keys_still_decrypt(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    before = EncryptionCodec(load_keys(key_file(tmp_path / "k-old", keys={"2025": old})))
    written_before = await before.encode([plain("from last year")])
    rotated = EncryptionCodec(load_keys(key_file(tmp_path / "k-rot",
                                                 keys={"2026": new, "2025": old})))
    assert rotated.keys.current[0] == "2026"
    assert await rotated.decode(written_before) == [plain("from last year")]
    written_after = await rotated.encode([plain("from this year")])
    assert written_after[0].metadata["encryption-key-id"] == b"2026"
    # The old key alone cannot read what the new one wrote: it names the id it lacks.
    with pytest.raises(UnknownKeyError) as info:
        await before.decode(written_after)
    assert info.value.key_id == "2026"
    message = str(info.value)
    assert "'2026'" in message and str(tmp_path / "k-old") in message
    assert "holds: 2025" in message and "add the key with id '2026' back" in message


async def test_a_changed_ciphertext_or_key_id_is_refused(tmp_path: Path) -> None:
    codec = EncryptionCodec(load_keys(key_file(tmp_path / "keys", "a", "b")))
    [sealed] = await codec.encode([plain("x")])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(CodecError, match="key id 'a' failed authentication: it was changed"):
        await codec.decode([tampered])
    # The key id is bound to the ciphertext: relabelled as b's, b's key does not open it.
    relabelled = Payload(metadata={**sealed.metadata, "encryption-key-id": b"b"},
                         data=sealed.data)
    with pytest.raises(CodecError, match="key id 'b' failed authentication"):
        await codec.decode([relabelled])
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:5])
    with pytest.raises(CodecError, match="failed authentication"):
        await codec.decode([truncated])


async def test_payloads_not_encrypted_pass_through_on_decode(tmp_path: Path) -> None:
    """A deployment turns encryption on with workflows running: their histories' clear
    payloads still decode."""
    codec = EncryptionCodec(load_keys(key_file(tmp_path / "keys", "k1")))
    mixed = [plain("old, in clear"), *(await codec.encode([plain("new")]))]
    assert await codec.decode(mixed) == [plain("old, in clear"), plain("new")]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "holds no key"),
    ("# only a comment\n\n", "holds no key"),
    ("k1 AAAA\n", "line 1: expected '<id>: <base64 key>'"),
    ("k1:\n", "line 1: expected '<id>: <base64 key>'"),
    (f"k1: {KEY}\nbad id!: {KEY}\n", "line 2: key id 'bad id!' is not usable"),
    (f"k1: {KEY}\nk1: {KEY}\n", "line 2: key id 'k1' is defined twice"),
    ("k1: not*base64\n", "line 1: the key of 'k1' is not base64"),
    (f"k1: {base64.b64encode(b'short').decode()}\n", "line 1: the key of 'k1' is 5 bytes"),
])
def test_a_bad_key_file_says_which_line_and_what(text: str, expected: str) -> None:
    with pytest.raises(KeyFileError, match=expected.replace("(", r"\(").replace("*", r"\*")):
        parse_keys(text, Path("/etc/keys"))


def test_a_key_file_open_to_others_or_missing_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path / "keys", "k1")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"open to other users \(mode 0644\).*chmod o-rwx"):
        load_keys(path)
    path.chmod(0o640)  # the group is the deployment's choice
    assert load_keys(path).ids == ["k1"]
    with pytest.raises(KeyFileError, match=r"cannot be used .*No such file"):
        load_keys(tmp_path / "missing")


async def test_clients_refuse_an_unusable_key_file_before_connecting(tmp_path: Path) -> None:
    config = make_config(tmp_path, projects=[], jobs=[])
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    (tmp_path / "keys").chmod(0o604)
    config.temporal.address = "127.0.0.1:1"  # never dialled: the key file is checked first
    with pytest.raises(TemporalConfigError, match=r"codec\.key-file: the codec key file"):
        await connect(config)


def test_a_worker_with_an_unusable_key_file_exits_2_saying_why(tmp_path: Path) -> None:
    keys = key_file(tmp_path / "keys", "k1")
    keys.chmod(0o644)
    config = tmp_path / "lockmaster.yaml"
    config.write_text(f"state-dir: {tmp_path / 'state'}\ntemporal:\n  address: 127.0.0.1:1\n"
                      f"codec:\n  key-file: keys\n")
    result = CliRunner().invoke(app, ["worker", "orchestrator", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"the codec key file {keys} is open to other users" in " ".join(
        result.output.split())


# --- on the dev server ------------------------------------------------------------------


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere in a protobuf message (a history, an event)."""
    if isinstance(message, Payload):
        yield message
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if isinstance(value, Message):
            values = [value]
        elif descriptor.message_type.GetOptions().map_entry:
            values = value.values()
        else:  # a repeated field
            values = list(value)
        for item in values:
            if isinstance(item, Message):
                yield from payloads_in(item)


async def encrypted_client(client: Client, config) -> Client:  # type: ignore[no-untyped-def]
    """A client of the session's dev server that encrypts as `config` says."""
    return await Client.connect(client.service_client.config.target_host,
                                namespace=client.namespace,
                                data_converter=data_converter(config))


async def test_a_check_history_holds_no_clear_text_of_its_inputs(
        client: Client, tmp_path: Path) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    name = unique_project()
    config = make_config(
        tmp_path,
        projects=[{"name": name, "connection": "local",
                   "pipelines": {"check": {"jobs": ["build"]}}}],
        jobs=[{"name": "build", "run": f"echo {marker}", "nodeset": "local"}],
    )
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    secure = await encrypted_client(client, config)
    async with deployment(secure, config) as dep:
        dep.store.create_project(name, {"README": "hello\n"})
        _, actions = await dep.upload(name, files={"a.txt": "a\n"}, subject=marker)
        wid = next(a.workflow_id for a in actions if a.workflow_id)
        outcome = await dep.outcome(wid)
        assert outcome.result == "SUCCESS"
    # Read as the Temporal server stores it: no codec.
    history = await client.get_workflow_handle(wid).fetch_history()
    raw = history.to_json()
    assert marker not in raw
    assert marker.encode() not in b"".join(e.SerializeToString() for e in history.events)
    found = list(payloads_in(history.events[0]))
    for event in history.events[1:]:
        found.extend(payloads_in(event))
    encrypted = [p for p in found if p.metadata.get("encoding") == b"binary/encrypted"]
    assert encrypted, "no encrypted payload in the history"
    # ... and the marker was there, encrypted: the key finds it.
    codec = EncryptionCodec(load_keys(tmp_path / "keys"))
    clear = codec.decrypt_all(encrypted)
    assert any(marker.encode() in p.data for p in clear)
    # The only payloads left in clear are the search attributes (never encrypted by a codec:
    # no secret goes there), and the marker is in none of them.
    assert all(marker.encode() not in p.data for p in found if p not in encrypted)


async def test_simulate_encrypts_with_codec_key_file(client: Client, tmp_path: Path) -> None:
    import typer

    from lockmaster.cli.simulate_cmd import simulate

    scenarios = Path(__file__).parent / "scenarios"
    command = typer.Typer(add_completion=False)
    command.command()(simulate)
    address = client.service_client.config.target_host
    query = 'WorkflowId STARTS_WITH "sim-"'
    before = {w.id async for w in client.list_workflows(query)}
    open_keys = key_file(tmp_path / "open", "k1")
    open_keys.chmod(0o644)
    refused = await asyncio.to_thread(CliRunner().invoke, command, [
        str(scenarios / "check-failure.yaml"), "--address", address,
        "--codec-key-file", str(open_keys)])
    assert refused.exit_code == 2 and "open to other users" in refused.output
    assert {w.id async for w in client.list_workflows(query)} == before
    result = await asyncio.to_thread(CliRunner().invoke, command, [
        str(scenarios / "check-failure.yaml"), "--address", address, "--time-scale", "0.5",
        "--codec-key-file", str(key_file(tmp_path / "keys", "k1"))])
    assert result.exit_code == 0, result.output
    assert "check failure Verified-1" in result.output
    started = [w.id async for w in client.list_workflows(query) if w.id not in before]
    assert started
    for wid in started:
        history = await client.get_workflow_handle(wid).fetch_history()
        first = history.events[0].workflow_execution_started_event_attributes
        assert [p.metadata["encoding"] for p in first.input.payloads] == [
            b"binary/encrypted"] * len(first.input.payloads), wid


async def test_failure_messages_are_encrypted_and_restored(tmp_path: Path) -> None:
    from temporalio.api.failure.v1 import Failure
    from temporalio.exceptions import ApplicationError

    config = make_config(tmp_path, projects=[], jobs=[])
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    converter = data_converter(config)
    failure = Failure()
    await converter.encode_failure(
        ApplicationError("clone of https://user:hunter2@git.example/x failed"), failure)
    assert failure.message == "Encoded failure"
    assert b"hunter2" not in failure.SerializeToString()
    assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"
    restored = await converter.decode_failure(failure)
    assert str(restored) == "clone of https://user:hunter2@git.example/x failed"


def test_lockmaster_run_with_an_unusable_key_file_exits_2_before_starting(
        tmp_path: Path) -> None:
    keys = key_file(tmp_path / "keys", "k1")
    keys.write_text("k1: not-a-key\n")
    config = tmp_path / "lockmaster.yaml"
    config.write_text(f"state-dir: {tmp_path / 'state'}\ncodec:\n  key-file: keys\n"
                      "temporal:\n  dev-server:\n    enabled: true\n    port: 1\n")
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--no-demo"])
    assert result.exit_code == 2, result.output
    assert "line 1: the key of 'k1' is not base64" in " ".join(result.output.split())
    assert not (tmp_path / "state" / "temporal.db").exists()  # no dev server was started


def test_config_check_says_which_key_encrypts_or_notes_an_unusable_key_file(
        tmp_path: Path) -> None:
    key_file(tmp_path / "keys", "k2", "k1")
    config = tmp_path / "lockmaster.yaml"
    config.write_text(f"state-dir: {tmp_path / 'state'}\ncodec:\n  key-file: keys\n")
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "codec: payloads encrypted with key 'k2'; 2 key(s) decrypt" in result.output
    (tmp_path / "keys").chmod(0o666)
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    # A note, not a refusal: the file is checked on hosts that may not hold the keys.
    assert result.exit_code == 0, result.output
    assert "note: codec.key-file: the codec key file" in " ".join(result.output.split())
    assert "open to other users (mode 0666)" in result.output


async def test_encryption_turned_on_then_off_with_a_gate_running(
        client: Client, tmp_path: Path) -> None:
    """A running queue goes on across the switch: its workers, restarted with the key, replay
    the clear history and encrypt from then on; restarted with `encrypt: false`, they still
    read what was encrypted and send in clear."""
    from tests.test_gate_operator_cli import lockmaster, wait_report, write_config
    from tests.test_gate_workflow import gate_config, wait_status

    clear_why, secret_why, after_why = (f"MARKER-{uuid.uuid4().hex}" for _ in range(3))
    name = unique_project()
    config = gate_config(tmp_path, [name], "sleep 30")
    wid = f"{config.temporal.workflow_id_prefix}gate/{name}"

    async def enqueue(dep, number: int, why: str) -> None:  # type: ignore[no-untyped-def]
        """`lockmaster gate enqueue`, with the configuration of the moment (codec or not)."""
        config_file = write_config(dep, client, tmp_path / "lockmaster.yaml")
        done = await lockmaster(config_file, "gate", "enqueue", "--change", str(number),
                                "--force", "--reason", why, "--user", "alice")
        assert done.exit_code == 0, done.output

    async def queued(dep, count: int) -> None:  # type: ignore[no-untyped-def]
        await wait_status(dep, wid, lambda s: len(s.items) == count, timeout=120)

    async with deployment(client, config) as dep:  # no codec: everything in clear
        dep.store.create_project(name, {"README": "x\n"})
        first = dep.store.upload(name, files={"a": "a\n"}, subject="a")
        await enqueue(dep, first.number, clear_why)
        await queued(dep, 1)
    config.codec = CodecConfig(key_file=key_file(tmp_path / "keys", "k1"))
    async with deployment(await encrypted_client(client, config), config) as dep:
        second = dep.store.upload(name, files={"b": "b\n"}, subject="b")
        await enqueue(dep, second.number, secret_why)
        await queued(dep, 2)
        await wait_report(dep, second.number, secret_why)
    config.codec = CodecConfig(key_file=tmp_path / "keys", encrypt=False)
    async with deployment(await encrypted_client(client, config), config) as dep:
        third = dep.store.upload(name, files={"c": "c\n"}, subject="c")
        await enqueue(dep, third.number, after_why)
        await queued(dep, 3)
        await wait_report(dep, third.number, after_why)
        await dep.client.get_workflow_handle(wid).terminate("test over")
    stored = b"".join(e.SerializeToString()
                      for e in (await client.get_workflow_handle(wid).fetch_history()).events)
    assert clear_why.encode() in stored  # from before: left as it was
    assert secret_why.encode() not in stored  # while on: encrypted
    assert after_why.encode() in stored  # turned off: in clear again
