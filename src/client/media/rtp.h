// RTP (RFC 3550) packets as this engine sends and reads them, and the receive-side statistics
// (sequence extension, loss, interarrival jitter; RFC 3550 appendix A.1, A.3, A.8).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kabar::client::media {

struct RtpHeader {
  bool marker = false;
  std::uint8_t payload_type = 0;
  std::uint16_t sequence = 0;
  std::uint32_t timestamp = 0;
  std::uint32_t ssrc = 0;
};

// 12-byte header (no CSRC, no extension) followed by `payload`.
std::vector<std::uint8_t> write_rtp(const RtpHeader& header, std::span<const std::uint8_t> payload);

struct RtpPacket {
  RtpHeader header;
  std::span<const std::uint8_t> payload;  // into the parsed buffer
};

// Reads a packet from a peer: CSRCs, a header extension (browsers send them) and padding are
// skipped. nullopt for anything malformed.
std::optional<RtpPacket> parse_rtp(std::span<const std::uint8_t> packet);

// RFC 5761 §4: with rtcp-mux, RTCP packet types 192-223 sit where RTP's marker and payload type
// are.
bool is_rtcp(std::span<const std::uint8_t> packet);

// RFC 7983 §7: what the first byte of a datagram on the ICE component says it is.
enum class PacketKind { kStun, kDtls, kRtp, kOther };
PacketKind classify(std::span<const std::uint8_t> packet);

// RFC 3550 §6.4.1 sender information.
struct SenderInfo {
  std::uint64_t ntp = 0;  // NTP timestamp, 32.32 fixed point
  std::uint32_t rtp_timestamp = 0;
  std::uint32_t packets = 0;
  std::uint32_t octets = 0;
};

// RFC 3550 §6.4.1 report block: what we received from `ssrc`.
struct ReportBlock {
  std::uint32_t ssrc = 0;
  std::uint8_t fraction_lost = 0;
  std::int32_t cumulative_lost = 0;  // 24 bits on the wire
  std::uint32_t highest_sequence = 0;
  std::uint32_t jitter = 0;
  std::uint32_t last_sr = 0;         // middle 32 bits of the last SR's NTP timestamp
  std::uint32_t delay_since_sr = 0;  // 1/65536 s
};

// A compound RTCP packet (RFC 3550 §6.1): an SR when we send, else an RR, with at most one
// report block, then an SDES with our CNAME.
std::vector<std::uint8_t> write_rtcp_report(std::uint32_t ssrc,
                                            const std::optional<SenderInfo>& sender,
                                            const std::optional<ReportBlock>& block,
                                            const std::string& cname);

// RFC 4585 §6.3.1 Picture Loss Indication: `sender` asks `media`'s sender for a key frame.
std::vector<std::uint8_t> write_rtcp_pli(std::uint32_t sender, std::uint32_t media);

// What this engine reads from a peer's compound RTCP: the last sender report's NTP time (for
// LSR), and the loss the peer reports about us.
struct RtcpSummary {
  std::optional<std::uint64_t> sender_ntp;
  std::optional<ReportBlock> report;  // the first report block
  bool keyframe_request = false;      // PLI (RFC 4585 §6.3.1) or FIR (RFC 5104 §4.3.1)
};
std::optional<RtcpSummary> parse_rtcp(std::span<const std::uint8_t> packet);

// Per-source receive statistics.
class ReceiveStats {
 public:
  // `arrival` in the RTP clock's units.
  void on_packet(std::uint16_t sequence, std::uint32_t timestamp, std::uint32_t arrival);
  std::uint64_t received() const { return received_; }
  // Packets expected from the sequence range seen, minus those received (never negative).
  std::uint64_t lost() const;
  // Interarrival jitter, RTP clock units.
  double jitter() const { return jitter_; }
  // A report block for `ssrc` (the sender), the fraction lost counted since the previous one.
  ReportBlock report(std::uint32_t ssrc);

 private:
  bool started_ = false;
  std::uint32_t base_ = 0;     // first extended sequence number
  std::uint32_t highest_ = 0;  // highest extended sequence number
  std::uint64_t received_ = 0;
  std::int64_t last_transit_ = 0;
  double jitter_ = 0;
  std::uint64_t expected_prior_ = 0;
  std::uint64_t received_prior_ = 0;
};

}  // namespace kabar::client::media
