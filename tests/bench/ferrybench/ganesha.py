"""nfs-ganesha, the user-space NFS server, exporting the benchmark's source
and destination directories on loopback (the guest reaches it as 10.0.2.2)."""

import os
import shutil
import signal
import socket
import subprocess
import time

from .util import BenchError, write

CONFIG = """
NFS_CORE_PARAM {{
    Protocols = 3, 4;
    NFS_Port = {port};
    MNT_Port = {mnt_port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    mount_path_pseudo = true;
}}
NFSV4 {{
    Graceless = true;
    Allow_Numeric_Owners = true;
    Only_Numeric_Owners = true;
}}
LOG {{ Default_Log_Level = WARN; }}
{exports}
"""

EXPORT = """
EXPORT {{
    Export_Id = {id};
    Path = {path};
    Pseudo = /{name};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


def _listening(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Ganesha:
    """One ganesha.nfsd exporting `exports` ({name: path}) over NFS 3 and 4."""

    def __init__(self, work, exports, port=2049, mnt_port=20048):
        self.work, self.exports, self.port, self.mnt_port = work, exports, port, mnt_port
        self.proc = self.rpcbind = None

    def __enter__(self):
        if shutil.which("ganesha.nfsd") is None:
            raise BenchError("ganesha.nfsd is missing: run scripts/setup")
        if _listening(self.port):
            raise BenchError(f"port {self.port} is taken: another NFS server is running")
        # NFSv3 registers with rpcbind at start-up.
        if not _listening(111):
            self.rpcbind = subprocess.Popen(["rpcbind", "-f", "-w"], start_new_session=True)
            for _ in range(50):
                if _listening(111):
                    break
                time.sleep(0.1)
        exports = "".join(
            EXPORT.format(id=i + 1, path=path, name=name)
            for i, (name, path) in enumerate(sorted(self.exports.items()))
        )
        conf = os.path.join(self.work, "ganesha.conf")
        write(conf, CONFIG.format(port=self.port, mnt_port=self.mnt_port, exports=exports))
        log = os.path.join(self.work, "ganesha.log")
        self.proc = subprocess.Popen(
            ["ganesha.nfsd", "-F", "-f", conf, "-L", log, "-p", os.path.join(self.work, "ganesha.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(100):
            if self.proc.poll() is not None:
                raise BenchError(f"ganesha.nfsd exited ({self.proc.returncode}); see {log}")
            if _listening(self.port):
                return self
            time.sleep(0.1)
        raise BenchError(f"ganesha.nfsd did not listen on {self.port}; see {log}")

    def __exit__(self, *exc):
        for proc in (self.proc, self.rpcbind):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
