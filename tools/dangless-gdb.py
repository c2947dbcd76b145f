# gdb helper for Dangless: read an object through its canonical address.
#
#   (gdb) source tools/dangless-gdb.py
#   (gdb) dangless-canonical p          # p: any expression giving an address
#   dangless: 0xffff80000012a040 -> canonical 0x7f3a2c004040 (in $canon)
#   (gdb) x/16xb $canon
#
# Under backend=kvm the aliases exist only in the guest's page tables, so
# gdb (ptrace, /proc/PID/mem: the host's view) cannot read them; the
# canonical bytes are ordinary process memory.  The command calls
# dangless_get_canonical() in the live inferior (metadata lookups only, no
# allocation, safe from a stopped thread) and stores the result in $canon.
# An address that is no live Dangless object comes back unchanged, and the
# command says so.  A core dump has no running code to call: there, the
# canonical arena is in the dump but the translation is not (see
# Documentation/design.md, "What tools see").
import gdb


class DanglessCanonical(gdb.Command):
    """dangless-canonical ADDR: the canonical address of the byte a live
Dangless alias points to, printed and stored in $canon."""

    def __init__(self):
        super().__init__("dangless-canonical", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        if not arg.strip():
            raise gdb.GdbError("usage: dangless-canonical ADDR (an expression giving an address)")
        if not gdb.selected_inferior().pid:
            raise gdb.GdbError("dangless-canonical needs a running process: it calls "
                               "dangless_get_canonical() in it (a core dump cannot)")
        try:
            gdb.parse_and_eval("dangless_get_canonical")
        except gdb.error:
            raise gdb.GdbError("dangless_get_canonical is not in this program: is "
                               "libdangless loaded (LD_PRELOAD or linked)?")
        void_p = gdb.lookup_type("void").pointer()
        alias = gdb.parse_and_eval(arg).cast(void_p)
        canon = gdb.parse_and_eval("((void *(*)(void *))dangless_get_canonical)((void *)%d)"
                                   % int(alias))
        gdb.set_convenience_variable("canon", canon)
        a, c = int(alias), int(canon)
        if a == c:
            print("dangless: %#x is not a live Dangless object (unchanged in $canon)" % a)
        else:
            print("dangless: %#x -> canonical %#x (in $canon)" % (a, c))


DanglessCanonical()
