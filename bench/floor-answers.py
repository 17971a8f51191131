#!/usr/bin/env python3
"""Captures the answers bench/floor serves: the shim's own answers to the bench's requests.

    bench/floor-answers.py SHIM_URL SEEDED_SESSION_ID FRESH_SESSION_ID OUT_DIR

getSession of a seeded session (a WebSEAL login's size) and of an unknown one; createSession of
a fresh session and again of the same ID; changeSession of it with its version and with a
stale one. Each answer's result code is checked, so the floor answers what the shim answers.
"""
import pathlib
import sys
import urllib.request

url, seeded, fresh, out = sys.argv[1:5]
out = pathlib.Path(out)
out.mkdir(parents=True, exist_ok=True)

ENV = ('<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope'
       ' xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"'
       ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
       ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><SOAP-ENV:Body>'
       '<ns1:{op} xmlns:ns1="http://sms.am.tivoli.com">{inner}</ns1:{op}>'
       '</SOAP-ENV:Body></SOAP-ENV:Envelope>\n')
WHO = '<ns1:replica>bench-webseald</ns1:replica><ns1:replicaSet>default</ns1:replicaSet>'


def item(cls, value):
    return (f'<ns1:data><ns1:value>{value}</ns1:value><ns1:dataClass>{cls}</ns1:dataClass>'
            '<ns1:instance>sms</ns1:instance><ns1:changePolicy>1</ns1:changePolicy></ns1:data>')


def capture(name, op, inner, code):
    request = urllib.request.Request(
        url + '/DSess/services/DSess', data=ENV.format(op=op, inner=inner).encode(),
        headers={'Content-Type': 'text/xml; charset=utf-8', 'SOAPAction': f'"{op}"'})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read()
    if f'>{code}</'.encode() not in body:
        sys.exit(f'{op} ({name}) did not answer {code}: {body[:400]!r}')
    (out / f'{name}.xml').write_bytes(body)


get = WHO + '<ns1:sessionID>{}</ns1:sessionID><ns1:ssoType>local</ns1:ssoType><ns1:ssoSource xsi:nil="true"/>'
capture('get', 'getSession', get.format(seeded), 952467756)
capture('get-missing', 'getSession', get.format(fresh + 'missing'), 952467768)
create = (WHO + f'<ns1:sessionID>{fresh}</ns1:sessionID><ns1:sessionLimit>0</ns1:sessionLimit>'
          + item('com.tivoli.am.eb.user-name', 'floor@bench.example'))
capture('create', 'createSession', create, 952467756)
# From another replica: the same replica's retry of a create it made is answered success.
capture('create-in-use', 'createSession', create.replace('bench-webseald<', 'bench-webseald-2<'), 952467761)
change = (WHO + f'<ns1:sessionID>{fresh}</ns1:sessionID><ns1:version>{{}}</ns1:version>'
          '<ns1:push>false</ns1:push><ns1:sessionLimit>0</ns1:sessionLimit>'
          + item('com.tivoli.am.eb.last-access', '0x1'))
capture('change', 'changeSession', change.format(0), 952467756)
capture('change-mismatch', 'changeSession', change.format(0), 952467765)
