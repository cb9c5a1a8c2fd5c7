"""Server reflection answers in both protocol versions, v1 (grpcurl 1.8.8+ and newer clients) and v1alpha."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from server import access, roles
from server.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME, v1_file_descriptor
from server.services import SERVICE_NAMES
from server.settings import AuthToken

HEALTH = "grpc.health.v1.Health"
EXPECTED = {*SERVICE_NAMES, HEALTH, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME}

# grpc's src/proto/grpc/reflection/v1/reflection.proto, written out: message -> {field: number}.
UPSTREAM_V1 = {
    "ServerReflectionRequest": {"host": 1, "file_by_filename": 3, "file_containing_symbol": 4,
                                "file_containing_extension": 5, "all_extension_numbers_of_type": 6,
                                "list_services": 7},
    "ExtensionRequest": {"containing_type": 1, "extension_number": 2},
    "ServerReflectionResponse": {"valid_host": 1, "original_request": 2, "file_descriptor_response": 4,
                                 "all_extension_numbers_response": 5, "list_services_response": 6,
                                 "error_response": 7},
    "FileDescriptorResponse": {"file_descriptor_proto": 1},
    "ExtensionNumberResponse": {"base_type_name": 1, "extension_number": 2},
    "ListServiceResponse": {"service": 1},
    "ServiceResponse": {"name": 1},
    "ErrorResponse": {"error_code": 1, "error_message": 2},
}


def _v1_classes():
    """v1's request and response classes, built in a pool of the test's own (not the server's default pool)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(v1_file_descriptor())
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
    return request, response


async def _ask_v1(channel: grpc.aio.Channel, *requests):
    request_class, response_class = _v1_classes()
    call = channel.stream_stream(
        f"/{V1_SERVICE_NAME}/ServerReflectionInfo",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    return [reply async for reply in call(iter([request_class(**r) for r in requests]), timeout=10)]


def test_v1_file_is_upstream_v1():
    file = v1_file_descriptor()
    assert (file.name, file.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    assert {m.name: {f.name: f.number for f in m.field} for m in file.message_type} == UPSTREAM_V1
    referenced = [f.type_name for m in file.message_type for f in m.field if f.type_name]
    referenced += [x for m in file.service[0].method for x in (m.input_type, m.output_type)]
    assert referenced and all(name.startswith(".grpc.reflection.v1.") for name in referenced)


async def test_v1_lists_and_describes_without_a_token(make_memory_server):
    secret = access.hash_token("operator-0123456789abcdef")
    token = AuthToken(name="ops", role=roles.Role.OPERATOR.value, sha256=secret)
    server = await make_memory_server(auth_tokens=(token,))  # reflection stays open, as health does
    listed, described, unknown = await _ask_v1(
        server.channel,
        {"list_services": ""},
        {"file_containing_symbol": V1_SERVICE_NAME},
        {"file_containing_symbol": "learning.v1.NoSuchService"},
    )
    assert {s.name for s in listed.list_services_response.service} == EXPECTED
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    assert [(f.package, [s.name for s in f.service]) for f in files] == [("grpc.reflection.v1", ["ServerReflection"])]
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]

    training = (await _ask_v1(server.channel, {"file_containing_symbol": "learning.v1.TrainingService"}))[0]
    packages = {descriptor_pb2.FileDescriptorProto.FromString(b).package
                for b in training.file_descriptor_response.file_descriptor_proto}
    assert {"learning.v1", "google.protobuf"} <= packages  # with its dependencies


async def test_v1alpha_lists_and_describes_with_grpcs_own_client(memory_client):
    target = f"127.0.0.1:{memory_client.app.port}"

    def discover() -> tuple[set[str], list[str]]:
        with grpc.insecure_channel(target) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            pool = descriptor_pool.DescriptorPool(database)
            v1 = pool.FindServiceByName(V1_SERVICE_NAME)
            return set(database.get_services()), [m.name for m in v1.methods]

    services, v1_methods = await asyncio.to_thread(discover)
    assert services == EXPECTED
    assert v1_methods == ["ServerReflectionInfo"]
