@echo off
rem `qrfleet bridge` on Windows: relays the units plugged into this PC to their server
rem (docs\tethered.md), starts it again 2 s after it ever stops, and appends its lines to
rem %LOCALAPPDATA%\qrfleet\bridge.log. Edit QRFLEET and the --server URLs below first.
rem
rem Start it at login: a shortcut to this file in the Startup folder (Win+R, shell:startup),
rem set to "Run: Minimized" in its properties; or, from a command prompt run as administrator:
rem   schtasks /Create /SC ONLOGON /RU SHOP\cashier /IT /TN "qrfleet bridge" /TR "C:\Users\cashier\qrfleet\qrfleet-bridge.cmd"

setlocal
set QRFLEET=%USERPROFILE%\qrfleet\Scripts\qrfleet.exe
set LOGDIR=%LOCALAPPDATA%\qrfleet
if not exist "%LOGDIR%" mkdir "%LOGDIR%"

:run
"%QRFLEET%" bridge --port auto --server https://qr.example.com >> "%LOGDIR%\bridge.log" 2>&1
rem Two seconds (ping, not timeout, which fails when its input is not a console).
ping -n 3 127.0.0.1 > nul
goto run
