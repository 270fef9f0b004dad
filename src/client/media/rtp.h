// RTP (RFC 3550) packets as this engine sends and reads them, and the receive-side statistics
// (sequence extension, loss, interarrival jitter; RFC 3550 appendix A.1, A.3, A.8).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
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

 private:
  bool started_ = false;
  std::uint32_t base_ = 0;     // first extended sequence number
  std::uint32_t highest_ = 0;  // highest extended sequence number
  std::uint64_t received_ = 0;
  std::int64_t last_transit_ = 0;
  double jitter_ = 0;
};

}  // namespace kabar::client::media
