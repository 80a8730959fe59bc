# network, as the ESP32 port has it (ports/esp32/network_wlan.c, modnetwork_globals.h), for a
# board whose radio is the supervisor's relay (tools/vboard/radio.py).
#
# There is one access point, the bench's: it is in range unless the harness takes Wi-Fi down,
# and it accepts any SSID and key. The station joins it as soon as connect() is called while it
# is in range, and rejoins by itself when it comes back, as the port's reconnect logic does.
# Sockets go through the relay (see socket.py) whether or not the station has joined: on a
# unit, nothing reaches the network before connect().

import link

STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212

SEC_OPEN = 0
SEC_WEP = 1
SEC_WPA = 2
SEC_WPA2 = 3
SEC_WPA_WPA2 = 4
SEC_WPA2_ENT = 5
SEC_WPA3 = 6
SEC_WPA2_WPA3 = 7
PM_NONE = 0
PM_PERFORMANCE = 1
PM_POWERSAVE = 2

_BENCH_AP = (b"qrfleet-bench", b"\x02\x00\x00\x00\xbe\x01", 6, -55, SEC_WPA2, False)
_RSSI = -55
_STA_LEASE = ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")
_AP_ADDRESS = ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
_NO_ADDRESS = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
_DISCONNECTED_BY_US = 8  # WIFI_REASON_ASSOC_LEAVE


def hostname():
    return "mpy-esp32"


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF
    PM_NONE = PM_NONE
    PM_PERFORMANCE = PM_PERFORMANCE
    PM_POWERSAVE = PM_POWERSAVE

    def __new__(cls, interface=STA_IF):
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        return _interfaces[interface]

    def __init__(self, interface=STA_IF):
        pass

    def _setup(self, interface):
        self._if = interface
        self._active = False
        self._joining = False  # connect() asked for, and no disconnect() since
        self._reason = 0  # why the station last left, as the port records it
        self._ssid = ""
        mac = bytearray(link.MAC)
        mac[5] = (mac[5] + interface) & 0xFF  # the AP's MAC is the base MAC + 1 (last byte only)
        self._mac = bytes(mac)
        return self

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not self._active:
            self._joining = False
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF:
            raise OSError("STA required")
        if not self._active:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            self._ssid = ssid
        self._joining = True
        self._reason = 0

    def disconnect(self):
        if self._joining:
            self._reason = _DISCONNECTED_BY_US
        self._joining = False

    def isconnected(self):
        if self._if == AP_IF:
            return False  # no station ever joins this board's own access point
        return self._joining and bool(link.level(link.ACCESS_POINT))

    def status(self, param=None):
        if param is None:
            if self._if == AP_IF:
                return None
            if self.isconnected():
                return STAT_GOT_IP
            if self._joining:
                return STAT_NO_AP_FOUND  # the access point is out of range; retrying
            return STAT_IDLE
        if param == "rssi":
            if self._if != STA_IF:
                raise OSError("STA required")
            if not self.isconnected():
                raise OSError("Wifi Not Connected")
            return _RSSI
        if param == "stations":
            if self._if != AP_IF:
                raise OSError("AP required")
            return []
        raise ValueError("unknown status param")

    def _address(self):
        if self._if == AP_IF:
            return _AP_ADDRESS
        return _STA_LEASE if self.isconnected() else _NO_ADDRESS

    def ifconfig(self, *args):
        if args:
            raise OSError("the virtual board's addresses come from its access point")
        return self._address()

    def ipconfig(self, *args, **kwargs):
        if kwargs:
            raise OSError("the virtual board's addresses come from its access point")
        if len(args) != 1:
            raise TypeError("must query one param")
        key = args[0]
        if key == "addr4":
            address = self._address()
            return (address[0], address[1])
        if key == "gw4":
            return self._address()[2]
        if key == "dhcp4":
            return self._if == STA_IF
        raise ValueError("unexpected key")

    def config(self, *args, **kwargs):
        if args and kwargs:
            raise TypeError("either pos or kw args are allowed")
        if kwargs:
            for key in kwargs:
                if key not in _SETTABLE:
                    raise ValueError("unknown config param")
            if "mac" in kwargs:
                if len(kwargs["mac"]) != 6:
                    raise ValueError("invalid buffer length")
                self._mac = bytes(kwargs["mac"])
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        key = args[0]
        if key == "mac":
            return self._mac
        if key in ("ssid", "essid"):
            return self._ssid
        if key in ("hostname", "dhcp_hostname"):
            return hostname()
        if key == "channel":
            return _BENCH_AP[2]
        raise ValueError("unknown config param")

    def scan(self):
        if self._if != STA_IF or not self._active:
            raise OSError("STA must be active")
        return [_BENCH_AP] if link.level(link.ACCESS_POINT) else []


# What config() sets: the MAC; the rest is accepted without effect, there is no radio to tune.
_SETTABLE = (
    "mac",
    "ssid",
    "essid",
    "key",
    "password",
    "hidden",
    "security",
    "authmode",
    "channel",
    "hostname",
    "dhcp_hostname",
    "reconnects",
    "txpower",
    "pm",
    "protocol",
    "max_clients",
    "bandwidth",
)

_interfaces = (object.__new__(WLAN)._setup(STA_IF), object.__new__(WLAN)._setup(AP_IF))
