"""protobuf-c rules for an offline Bazel: the host protoc-c and protoc run in a
genrule. One call turns a set of .proto files into a cc_library of generated C
and a descriptor set (with imports) that carries what protobuf-c drops: options
such as google.api.http, json_name, and the full schema for server reflection.
"""

# Where protoc looks for imports that are not in this package: Debian ships the
# well-known types under /usr/include and the gRPC protos under grpc-proto.
_SYSTEM_INCLUDES = ["/usr/include", "/usr/share/grpc-proto"]

def _import_path(pkg, src):
    """The import path of a .proto label in this package (relative to it)."""
    if src.startswith(":"):
        src = src[1:]
    return src

def proto_c_library(name, srcs = [], system_srcs = [], deps = [], visibility = None):
    """Generates protobuf-c code and a descriptor set.

    Args:
      name: the cc_library; the descriptor set is `name + "_descriptor_set"`
        (a file `name.desc`).
      srcs: .proto files in this package; the package folder is their import
        root (api/agentmesh/v1/x.proto is imported as agentmesh/v1/x.proto).
      system_srcs: import paths of .proto files found under the system include
        roots (/usr/include, /usr/share/grpc-proto) to generate C for as well.
      deps: other cc_library targets the generated code needs.

    The library also defines `<name>_messages`, a NULL-terminated array
    of every message descriptor it declares (see //services/pbjson:registry).
    """
    pkg = native.package_name()
    root = pkg if pkg else "."
    files = [_import_path(pkg, s) for s in srcs] + system_srcs
    c_outs = [f[:-len(".proto")] + ".pb-c.c" for f in files]
    h_outs = [f[:-len(".proto")] + ".pb-c.h" for f in files]
    gendir = "$(GENDIR)/" + pkg if pkg else "$(GENDIR)"
    incs = " ".join(([("-I" + root)] if srcs else []) + ["-I" + i for i in _SYSTEM_INCLUDES])

    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = c_outs + h_outs,
        cmd = "protoc-c %s --c_out=%s %s" % (incs, gendir, " ".join(files)),
        message = "protoc-c " + name,
    )
    native.genrule(
        name = name + "_descriptor_set",
        srcs = srcs,
        outs = [name + ".desc"],
        cmd = "protoc %s --include_imports --include_source_info=false --descriptor_set_out=$@ %s" %
              (incs, " ".join(files)),
        message = "protoc descriptor set " + name,
    )
    native.genrule(
        name = name + "_registry_gen",
        srcs = h_outs,
        outs = [name + "_registry.c"],
        tools = ["//bazel:gen_registry.sh"],
        cmd = "$(location //bazel:gen_registry.sh) $@ %s_messages $(SRCS)" % name,
        message = "message registry " + name,
    )
    native.cc_library(
        name = name,
        srcs = c_outs + [name + "_registry.c"],
        hdrs = h_outs,
        includes = ["."],
        deps = deps + ["//bazel:protobuf_c"],
        visibility = visibility,
    )
