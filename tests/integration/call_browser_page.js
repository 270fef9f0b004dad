// The browser client of test_call_browser.py: StanzaJS (npm `stanza` 12) in Chromium, bundled
// at test time by call_browser.mjs (esbuild) and run in a page. It logs in over kabard's
// WebSocket endpoint and makes and takes calls with StanzaJS's Jingle RTP sessions (XEP-0166,
// XEP-0167, XEP-0176 trickle ICE, XEP-0320 DTLS, BUNDLE) on Chromium's fake devices.
//
// StanzaJS has no Jingle Message Initiation (XEP-0353): it is done here, with the JMI elements
// defined for StanzaJS's JXT (propose, ringing, proceed, reject, retract, finish). A proposal
// that arrives is answered with proceed (auto-answer on) and the caller's session-initiate, which
// carries the proposal's id as its sid, is accepted; an outgoing call is either a plain
// session-initiate or (jmi) a proposal to the bare JID first, the session started to the device
// that sends proceed.
//
// Everything that happens is reported through window.kabarReport (a function the driver exposes).
import * as XMPP from 'stanza';

const JMI = 'urn:xmpp:jingle-message:0';
const RTP = 'urn:xmpp:jingle:apps:rtp:1';

const report = (ev) => window.kabarReport(ev);
const log = (line) => report({ event: 'log', line });

let client = null;
let autoAnswer = false;
let stream = null;
const sessions = new Map();  // sid -> MediaSession
const proposals = new Map();  // our proposals: id -> {to, video}
const ended = new Set();  // sids of the sessions that ended
const analysers = new Map();  // sid -> the AnalyserNode on the received audio

async function media(video) {
  // The camera only when a call needs it (a voice call does not capture video).
  if (!stream || (video && !stream.getVideoTracks().length))
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: !!video });
  const s = new MediaStream(stream.getAudioTracks());
  if (video) for (const t of stream.getVideoTracks()) s.addTrack(t);
  return s;
}

function watch(session) {
  sessions.set(session.sid, session);
  const pc = session.pc;
  pc.addEventListener('iceconnectionstatechange', () =>
    report({ event: 'ice', sid: session.sid, state: pc.iceConnectionState }));
  pc.addEventListener('connectionstatechange', () =>
    report({ event: 'pc', sid: session.sid, state: pc.connectionState }));
  pc.addEventListener('icecandidate', (e) => {
    if (e.candidate) log(`local candidate ${e.candidate.candidate}`);
  });
  // A remote track is played (muted) so that Chromium decodes what it receives. An incoming
  // session has its remote description (and its tracks) before jingle:incoming: those too.
  pc.addEventListener('track', (e) => play(session, e.track));
  for (const r of pc.getReceivers()) if (r.track) play(session, r.track);
}

const playing = new Set();
function play(session, track) {
  // (Chromium names a track from the offer's msid: kabar sends none, so the same name comes
  // back in every call from kabar.)
  const key = `${session.sid} ${track.id}`;
  if (playing.has(key)) return;
  playing.add(key);
  report({ event: 'track', sid: session.sid, kind: track.kind });
  const el = document.createElement(track.kind === 'video' ? 'video' : 'audio');
  el.muted = true;
  el.autoplay = true;
  el.playsInline = true;
  el.srcObject = new MediaStream([track]);
  document.body.appendChild(el);
  el.play().catch(() => undefined);
  // What the received audio sounds like: its loudest frequency (Web Audio).
  if (track.kind === 'audio') {
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(an);
    ctx.resume().catch(() => undefined);
    analysers.set(session.sid, an);
  }
}

function defineJmi(c) {
  const { attribute, multipleChildAttribute } = XMPP.JXT;
  const path = 'message.jmi';
  const plain = (element) => ({
    element,
    namespace: JMI,
    path,
    type: element,
    fields: { id: attribute('id') },
  });
  const defs = [
    {
      element: 'propose',
      namespace: JMI,
      path,
      type: 'propose',
      typeField: 'type',
      fields: {
        id: attribute('id'),
        media: multipleChildAttribute(RTP, 'description', 'media'),
      },
    },
    ...['ringing', 'proceed', 'reject', 'retract', 'finish', 'accept'].map(plain),
  ];
  // The XEP-0166 reason some of them carry (reject, retract, finish).
  defs.push({
    element: 'reason',
    namespace: 'urn:xmpp:jingle:1',
    path: `${path}.reason`,
    fields: {
      condition: XMPP.JXT.childEnum(null, Object.values(XMPP.Constants.JingleReasonCondition)),
      text: XMPP.JXT.childText(null, 'text'),
    },
  });
  c.stanzas.define(defs);
}

function sendJmi(to, type, id, extra = {}) {
  // XEP-0353 §3: type chat, with a XEP-0334 store hint.
  client.sendMessage({
    to, type: 'chat', jmi: { type, id, ...extra }, processingHints: { store: true },
  });
}

async function answer(session) {
  try {
    const video = session.pc.getTransceivers().some((t) => t.receiver.track.kind === 'video');
    const s = await media(video);
    for (const t of s.getTracks()) await session.addTrack(t, s);
    await session.accept();
    report({ event: 'accepted', sid: session.sid, peer: session.peerID, video });
  } catch (err) {
    report({ event: 'fail', where: 'answer', error: String(err && err.stack || err) });
  }
}

async function start(peer, sid, video, videoCodec) {
  const s = await media(video);
  const session = client.jingle.createMediaSession(peer, sid);
  watch(session);
  for (const t of s.getTracks()) await session.addTrack(t, s);
  // Only this video codec offered (and its retransmissions), as a peer without VP8 would.
  if (videoCodec) {
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs.filter((c) =>
      c.mimeType === `video/${videoCodec}`);
    for (const t of session.pc.getTransceivers())
      if (t.receiver.track.kind === 'video') t.setCodecPreferences(codecs);
  }
  await session.start({ offerToReceiveAudio: true, offerToReceiveVideo: video });
  report({ event: 'initiated', sid: session.sid, peer, video });
  return session.sid;
}

window.kabarCall = {
  async login({ jid, password, url, answer: auto }) {
    autoAnswer = !!auto;
    client = XMPP.createClient({
      jid,
      password,
      resource: 'browser',
      transports: { websocket: url, bosh: false },
      useStreamManagement: false,
      // Loopback only: no STUN server (StanzaJS asks Google's by default).
      jingle: { iceServers: [] },
    });
    defineJmi(client);
    client.on('raw:incoming', (x) => log(`<< ${String(x).slice(0, 8000)}`));
    client.on('raw:outgoing', (x) => log(`>> ${String(x).slice(0, 8000)}`));
    client.on('session:started', async () => {
      await client.getRoster();
      client.sendPresence();
      report({ event: 'online', jid: client.jid });
    });
    client.on('jingle:incoming', (session) => {
      watch(session);
      report({ event: 'incoming', sid: session.sid, peer: session.peerID });
      if (autoAnswer) answer(session);
    });
    client.on('jingle:outgoing', (session) =>
      report({ event: 'outgoing', sid: session.sid, peer: session.peerID }));
    client.on('jingle:accepted', (session) =>
      report({ event: 'session-accepted', sid: session.sid }));
    client.on('jingle:terminated', (session, reason) => {
      ended.add(session.sid);
      report({ event: 'terminated', sid: session.sid, reason: reason && reason.condition });
    });
    client.on('message', (msg) => {
      const m = msg.jmi;
      if (!m) return;
      report({ event: 'jmi', kind: m.type, id: m.id, from: msg.from, media: m.media,
        reason: m.reason && m.reason.condition });
      if (m.type === 'propose' && autoAnswer) {
        sendJmi(msg.from, 'proceed', m.id);
      } else if (m.type === 'proceed' && proposals.has(m.id)) {
        const p = proposals.get(m.id);
        proposals.delete(m.id);
        start(msg.from, m.id, p.video, p.videoCodec).catch((err) =>
          report({ event: 'fail', where: 'start', error: String(err) }));
      }
    });
    client.on('available', (p) => {
      if (p.from !== client.jid) report({ event: 'presence', from: p.from });
    });
    client.on('disconnected', () => report({ event: 'disconnected' }));
    client.on('stream:error', (e) =>
      report({ event: 'fail', where: 'stream', error: JSON.stringify(e) }));
    client.on('auth:failed', () => report({ event: 'fail', where: 'auth' }));
    client.connect();
  },

  // A plain session-initiate to a full JID, or (jmi) a XEP-0353 proposal to a bare one.
  async call({ to, video, jmi, videoCodec }) {
    if (jmi) {
      const id = XMPP.Utils.uuid();
      proposals.set(id, { to, video, videoCodec });
      sendJmi(to, 'propose', id, { media: video ? ['audio', 'video'] : ['audio'] });
      report({ event: 'proposed', id });
      return id;
    }
    return start(to, undefined, video, videoCodec);
  },

  // Auto-answer on or off (off: proposals and sessions are reported, nothing is sent).
  setAnswer(on) {
    autoAnswer = !!on;
  },

  // Any JMI message (retract, reject, ...) with an optional XEP-0166 reason.
  jmi({ to, kind, id, reason }) {
    sendJmi(to, kind, id, reason ? { reason: { condition: reason } } : {});
  },

  // Inbound and outbound RTP counters of every session (getStats()).
  async stats() {
    const out = {};
    for (const [sid, session] of sessions) {
      const r = { inbound: {}, outbound: {}, state: session.pc.connectionState };
      const stats = await session.pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp') {
          r.inbound[s.kind] = {
            packets: s.packetsReceived || 0,
            bytes: s.bytesReceived || 0,
            framesDecoded: s.framesDecoded || 0,
            audioEnergy: s.totalAudioEnergy || 0,
            samples: s.totalSamplesReceived || 0,
            codec: s.codecId,
            ssrc: s.ssrc,
          };
        } else if (s.type === 'outbound-rtp') {
          r.outbound[s.kind] = {
            packets: s.packetsSent || 0,
            bytes: s.bytesSent || 0,
            ssrc: s.ssrc,
            codec: s.codecId,
            framesEncoded: s.framesEncoded,
            width: s.frameWidth,
            height: s.frameHeight,
            fps: s.framesPerSecond,
            encoder: s.encoderImplementation,
            limitation: s.qualityLimitationReason,
          };
        } else if (s.type === 'codec') {
          (r.codecs = r.codecs || {})[s.id] = s.mimeType;
        }
      });
      for (const dir of [r.inbound, r.outbound]) {
        for (const k of Object.keys(dir)) {
          const c = r.codecs && r.codecs[dir[k].codec];
          dir[k].codec = c || dir[k].codec;
        }
      }
      delete r.codecs;
      const an = analysers.get(sid);
      if (an) {
        const bins = new Float32Array(an.frequencyBinCount);
        an.getFloatFrequencyData(bins);
        let best = 0;
        for (let i = 1; i < bins.length; ++i) if (bins[i] > bins[best]) best = i;
        r.peakHz = Math.round((best * an.context.sampleRate) / an.fftSize);
        r.peakDb = Math.round(bins[best]);
      }
      out[sid] = r;
    }
    return out;
  },

  // Caps every video sender's bitrate (bits per second; 0: Chromium's own choice again).
  async limitVideo(bps) {
    for (const [sid, session] of sessions) {
      if (ended.has(sid)) continue;  // a closed connection's senders refuse new parameters
      for (const sender of session.pc.getSenders()) {
        if (!sender.track || sender.track.kind !== 'video') continue;
        const params = sender.getParameters();
        for (const e of params.encodings || []) {
          if (bps) e.maxBitrate = bps;
          else delete e.maxBitrate;
        }
        await sender.setParameters(params);
      }
    }
  },

  // Between calls: stops the microphone and camera (the next call opens them again), removes the
  // elements that played the calls' received media and closes their Web Audio contexts.
  async release() {
    if (stream) for (const t of stream.getTracks()) t.stop();
    stream = null;
    for (const el of document.querySelectorAll('audio, video')) {
      el.srcObject = null;
      el.remove();
    }
    for (const an of analysers.values()) await an.context.close().catch(() => undefined);
    analysers.clear();
  },

  hangup() {
    for (const [sid, session] of sessions) if (!ended.has(sid)) session.end('success');
  },

  async logout() {
    if (client) await client.disconnect();
  },
};
report({ event: 'loaded' });
