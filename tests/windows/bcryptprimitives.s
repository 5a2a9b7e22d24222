# Wine 8 work-around (test-only, not part of the product): a stand-in
# bcryptprimitives.dll for the Wine prefix, never for real Windows.
#
# Rust's standard library (1.78 and later) takes random bytes from
# bcryptprimitives!ProcessPrng, which every Windows 10+ has and Wine 8 lacks:
# cryptography's _rust.pyd, bundled in the Windows pyz, then fails to load
# ("DLL load failed while importing _rust"). This DLL exports ProcessPrng and
# forwards it to advapi32!SystemFunction036 (RtlGenRandom), which Wine has.
#
#   BOOL ProcessPrng(PBYTE data, SIZE_T len)   -- always TRUE, as documented
#
# Assembled with mingw binutils (tests/winehost.py): as, dlltool, ld.

    .text
    .globl ProcessPrng
ProcessPrng:
    subq    $40, %rsp                         # shadow space, 16-byte aligned call
    callq   *__imp_SystemFunction036(%rip)    # RtlGenRandom(data, len): rcx, rdx as given
    addq    $40, %rsp
    movl    $1, %eax
    retq

    .globl DllMain
DllMain:
    movl    $1, %eax
    retq
