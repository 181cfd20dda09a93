"""Embeds a binary file (a descriptor set) into a cc_library as a function
`const uint8_t *<symbol>(size_t *len)` returning static bytes."""

def embed_bytes(name, src, symbol, hdrs = [], visibility = None):
    """Generates `name`.c from `src` with xxd and wraps it in a cc_library.

    Args:
      name: the cc_library.
      src: the file label to embed.
      symbol: the C function to define.
      hdrs: headers declaring the function (included by the generated file).
      visibility: as usual.
    """
    includes = "".join(["echo '#include \"%s/%s\"'; " % (native.package_name(), h) for h in hdrs])
    native.genrule(
        name = name + "_gen",
        srcs = [src],
        outs = [name + ".c"],
        cmd = ("(echo '/* Generated from $(location %s); do not edit. */'; " % src +
               "echo '#include <stddef.h>'; echo '#include <stdint.h>'; " + includes +
               "echo 'static const uint8_t data[] = {'; xxd -i < $<; echo '};'; " +
               "echo 'const uint8_t *%s(size_t *len)' ; " % symbol +
               "echo '{ *len = sizeof data; return data; }') > $@"),
        message = "embedding " + src,
    )
    native.cc_library(
        name = name,
        srcs = [name + ".c"],
        hdrs = hdrs,
        visibility = visibility,
    )
