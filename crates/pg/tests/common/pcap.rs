//! A minimal libpcap reader that reassembles TCP connections.
//!
//! Supported input:
//! - the classic pcap format, both byte orders, microsecond and nanosecond
//!   magic numbers;
//! - link types Ethernet (1, with 802.1Q tags), BSD loopback (0, address
//!   family in the file's byte order), OpenBSD loopback (108, family in
//!   network order), Linux cooked capture (113) and raw IP (101);
//! - IPv4, and IPv6 without extension headers.
//!
//! Each direction of a TCP connection is put in sequence order.
//! Retransmitted bytes are dropped, and a gap fails the test.

use std::collections::HashMap;

/// One TCP connection with the bytes each side sent.
#[derive(Debug)]
pub struct Connection {
    pub client_port: u16,
    pub server_port: u16,
    pub client_to_server: Vec<u8>,
    pub server_to_client: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct FlowKey {
    source: Vec<u8>,
    source_port: u16,
    destination: Vec<u8>,
    destination_port: u16,
}

impl FlowKey {
    fn reversed(&self) -> FlowKey {
        FlowKey {
            source: self.destination.clone(),
            source_port: self.destination_port,
            destination: self.source.clone(),
            destination_port: self.source_port,
        }
    }
}

#[derive(Default)]
struct Flow {
    initial_sequence: Option<u32>,
    segments: Vec<(u32, Vec<u8>)>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    little_endian: bool,
}

impl Cursor<'_> {
    fn u32_at(&self, offset: usize) -> u32 {
        let word: [u8; 4] = self.bytes[offset..offset + 4].try_into().unwrap();
        if self.little_endian {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    }
}

fn be16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

fn be32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

/// Returns the IP packet inside one link-layer frame, or None for frames
/// that carry something else (ARP, for example).
fn ip_packet(link_type: u32, frame: &[u8], little_endian: bool) -> Option<&[u8]> {
    match link_type {
        0 | 108 => {
            let family: [u8; 4] = frame.get(..4)?.try_into().ok()?;
            let family = if link_type == 0 && little_endian {
                u32::from_le_bytes(family)
            } else {
                u32::from_be_bytes(family)
            };
            // AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30 by platform.
            matches!(family, 2 | 24 | 28 | 30).then(|| &frame[4..])
        }
        1 => {
            let mut offset = 12;
            let mut ether_type = be16(frame, offset);
            while ether_type == 0x8100 || ether_type == 0x88a8 {
                offset += 4;
                ether_type = be16(frame, offset);
            }
            matches!(ether_type, 0x0800 | 0x86dd).then(|| &frame[offset + 2..])
        }
        101 => Some(frame),
        113 => matches!(be16(frame, 14), 0x0800 | 0x86dd).then(|| &frame[16..]),
        other => panic!("unsupported pcap link type {other}"),
    }
}

/// Returns (flow key, TCP segment) for a TCP packet, None otherwise.
fn tcp_segment(packet: &[u8]) -> Option<(FlowKey, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(be16(packet, 2)).min(packet.len());
            (packet[9] == 6).then(|| {
                (
                    FlowKey {
                        source: packet[12..16].to_vec(),
                        source_port: be16(packet, header),
                        destination: packet[16..20].to_vec(),
                        destination_port: be16(packet, header + 2),
                    },
                    &packet[header..total],
                )
            })
        }
        6 => {
            let total = (40 + usize::from(be16(packet, 4))).min(packet.len());
            (packet[6] == 6).then(|| {
                (
                    FlowKey {
                        source: packet[8..24].to_vec(),
                        source_port: be16(packet, 40),
                        destination: packet[24..40].to_vec(),
                        destination_port: be16(packet, 42),
                    },
                    &packet[40..total],
                )
            })
        }
        _ => None,
    }
}

/// Puts one direction's segments in sequence order and concatenates them.
fn reassemble(flow: &Flow) -> Vec<u8> {
    let Some(reference) = flow
        .initial_sequence
        .map(|isn| isn.wrapping_add(1))
        .or_else(|| flow.segments.first().map(|(sequence, _)| *sequence))
    else {
        return Vec::new();
    };
    let mut segments: Vec<(i64, &[u8])> = flow
        .segments
        .iter()
        .map(|(sequence, data)| {
            let offset = i64::from(sequence.wrapping_sub(reference).cast_signed());
            (offset, data.as_slice())
        })
        .collect();
    segments.sort_by_key(|(offset, _)| *offset);
    let base = segments.first().map_or(0, |(offset, _)| (*offset).min(0));
    let mut stream = Vec::new();
    for (offset, data) in segments {
        let start = usize::try_from(offset - base).unwrap();
        assert!(
            start <= stream.len(),
            "gap in TCP stream at offset {}",
            stream.len()
        );
        let end = start + data.len();
        if end > stream.len() {
            stream.extend_from_slice(&data[stream.len() - start..]);
        }
    }
    stream
}

/// Reads every TCP connection in a pcap file whose server side uses one of
/// `server_ports`, in order of first appearance.
pub fn read_connections(file: &[u8], server_ports: &[u16]) -> Vec<Connection> {
    assert!(file.len() >= 24, "pcap file shorter than its header");
    let little_endian = match file[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a libpcap file (magic {:02x?})", &file[..4]),
    };
    let cursor = Cursor {
        bytes: file,
        little_endian,
    };
    let link_type = cursor.u32_at(20) & 0x0fff_ffff;

    let mut flows: HashMap<FlowKey, Flow> = HashMap::new();
    let mut order: Vec<FlowKey> = Vec::new();
    let mut offset = 24;
    while offset + 16 <= file.len() {
        let captured = usize::try_from(cursor.u32_at(offset + 8)).unwrap();
        let start = offset + 16;
        let end = start + captured;
        assert!(end <= file.len(), "truncated pcap record at {offset}");
        offset = end;
        let Some(packet) = ip_packet(link_type, &file[start..end], little_endian) else {
            continue;
        };
        let Some((key, segment)) = tcp_segment(packet) else {
            continue;
        };
        if !server_ports.contains(&key.source_port) && !server_ports.contains(&key.destination_port)
        {
            continue;
        }
        let sequence = be32(segment, 4);
        let data_offset = usize::from(segment[12] >> 4) * 4;
        let syn = segment[13] & 0x02 != 0;
        if !flows.contains_key(&key) {
            order.push(key.clone());
        }
        let flow = flows.entry(key).or_default();
        if syn {
            flow.initial_sequence = Some(sequence);
        }
        let payload = &segment[data_offset..];
        if !payload.is_empty() {
            flow.segments.push((sequence, payload.to_vec()));
        }
    }

    let mut connections = Vec::new();
    for key in &order {
        if !server_ports.contains(&key.destination_port) {
            continue;
        }
        let empty = Flow::default();
        let client_flow = &flows[key];
        let server_flow = flows.get(&key.reversed()).unwrap_or(&empty);
        connections.push(Connection {
            client_port: key.source_port,
            server_port: key.destination_port,
            client_to_server: reassemble(client_flow),
            server_to_client: reassemble(server_flow),
        });
    }
    // A connection whose server spoke first and whose client never sent a
    // segment appears only as a server flow.
    for key in &order {
        if server_ports.contains(&key.source_port) && !flows.contains_key(&key.reversed()) {
            connections.push(Connection {
                client_port: key.destination_port,
                server_port: key.source_port,
                client_to_server: Vec::new(),
                server_to_client: reassemble(&flows[key]),
            });
        }
    }
    connections
}
