"""Point mediasoup 3.12 worker's meson build at Debian's system libraries instead of wraps.

The wraps download sources from the internet; Debian 12 packages the same versions
(abseil 20220623, libsrtp 2.5.0, libuv 1.44.2, OpenSSL 3.0, usrsctp, nlohmann-json).
Only the mediasoup-worker executable is kept: the tests and fuzzer need Catch2/libFuzzer.
"""
import re, sys, pathlib

w = pathlib.Path(sys.argv[1])
SYSTEM = """
openssl_dep = dependency('openssl')
nlohmann_json_dep = dependency('nlohmann_json')
libuv_dep = dependency('libuv')
libsrtp2_sys = dependency('libsrtp2')
# Debian installs the headers under srtp2/; the worker includes <srtp.h>.
libsrtp2_dep = declare_dependency(
  dependencies: libsrtp2_sys,
  compile_args: ['-I' + libsrtp2_sys.get_variable(pkgconfig: 'includedir') + '/srtp2'],
)
usrsctp_dep = dependency('usrsctp')
absl_container_dep = declare_dependency(dependencies: [
  dependency('absl_flat_hash_map'), dependency('absl_flat_hash_set'),
  dependency('absl_btree'), dependency('absl_inlined_vector'),
])
absl_strings_dep = dependency('absl_strings')
absl_types_dep = declare_dependency(dependencies: [
  dependency('absl_optional'), dependency('absl_variant'),
])
"""

def drop_subprojects(text):
    return re.sub(r"^[a-z0-9_]+_proj = subproject\(\n.*?\n\)\n", "", text, flags=re.S | re.M)

def use_vars(text):
    return re.sub(r"[a-z0-9_]+_proj\.get_variable\('([a-z0-9_]+_dep)'\)", r"\1", text)

m = w / "meson.build"
t = m.read_text()
t = t[: t.index("\ntest_sources = [")] + "\n"
t = drop_subprojects(t)
t = t.replace("cpp = meson.get_compiler('cpp')\n", "cpp = meson.get_compiler('cpp')\n" + SYSTEM, 1)
t = use_vars(t)
t = re.sub(r"\nlink_whole = \[\n.*?\n\]\n", "\nlink_whole = [\n  libwebrtc,\n]\n", t, flags=re.S)
m.write_text(t)
l = w / "deps/libwebrtc/meson.build"
l.write_text(use_vars(drop_subprojects(l.read_text())))
for f in (m, l):
    left = [x for x in f.read_text().splitlines() if "_proj" in x and "wingetopt" not in x]
    if left:
        sys.exit(f"{f} still mentions subprojects: {left}")
