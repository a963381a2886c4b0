// aedes-node.mjs - one node of the stand-in broker cluster of midge's bridge tests: Aedes
// sharing a Redis with its sibling nodes through mqemitter-redis (messages) and
// aedes-persistence-redis (sessions, subscriptions, queues, retained messages).
//
//   node aedes-node.mjs PORT REDIS_PORT NODE_ID
//
// Prints "listening PORT" when it accepts connections. Stock Aedes has three faults a bridge
// meets at once, measured by tests/integration/test_bridge_cluster.py; this script works
// around each (MIDGE_AEDES_STOCK=1 turns the workarounds off, to see them):
//  1. QoS 1: it sends PUBACK before the message is stored and forwarded, so a node killed
//     right after a PUBACK loses an acknowledged message. Here the message is published (into
//     Redis: the queues of persistent sessions, then the pub/sub channel) before the PUBACK.
//  2. A persistent session's subscriptions are stored, and every QoS 1/2 message matching them
//     is queued for the session in Redis, the publisher's own messages included; No Local (or
//     a bridge's own traffic) only stops the live copy, so after a reconnection the queued
//     copies are sent back to the bridge that published them. Here a message is never
//     forwarded to the client that published it (authorizeForward), which also clears it
//     from that client's queue (the publisher's id is put on the message before it is
//     queued: Aedes adds it only to the live copy).
//  3. A resumed session's subscriptions are restored before CONNACK is written, and a message
//     arriving meanwhile is written at once: PUBLISH before CONNACK, which a client must
//     treat as a protocol error. Here deliveries to a client wait for its CONNACK.
import net from 'node:net'
import { Aedes } from 'aedes'
import mqemitterRedis from 'mqemitter-redis'
import redisPersistence from 'aedes-persistence-redis'

const [port, redisPort, nodeId] = process.argv.slice(2)
const stock = process.env.MIDGE_AEDES_STOCK === '1'
const redis = { host: '127.0.0.1', port: Number(redisPort) }

const opts = {
  id: nodeId,
  mq: mqemitterRedis(redis),
  persistence: redisPersistence(redis),
  heartbeatInterval: 1000
}

if (!stock) {
  // 2: never back to its publisher (the packet carries the publisher's client id).
  opts.authorizeForward = (client, packet) => (packet.clientId === client.id ? null : packet)
  // 3: hold a client's deliveries until its CONNACK has been written. preConnect runs
  // before the session's subscriptions are restored, which capture these functions.
  opts.preConnect = (client, packet, callback) => {
    for (const name of ['deliver0', 'deliverQoS']) {
      const deliver = client[name]
      const held = []
      client[name] = function (p, cb) {
        if (client.connackSent) return deliver(p, cb)
        held.push([p, cb])
      }
      client.once('midge-connack', () => {
        for (const [p, cb] of held.splice(0)) deliver(p, cb)
      })
    }
    callback(null, true)
  }
}

const aedes = await Aedes.createBroker(opts)

if (!stock) {
  aedes.on('connackSent', (connack, client) => client.emit('midge-connack'))
  // 1: store and forward first, acknowledge after. authorizePublish runs before Aedes'
  // PUBACK; the copy it publishes is marked so that Aedes' own publish after the PUBACK
  // does nothing.
  const publish = aedes.publish.bind(aedes)
  aedes.publish = (packet, client, done) => {
    if (typeof client === 'function') {
      done = client
      client = null
    }
    if (packet.midgePublished) return (done || (() => {}))()
    return publish(packet, client, done)
  }
  aedes.authorizePublish = (client, packet, callback) => {
    // 2: the publisher goes with every copy, the queued ones too (Aedes only marks the copy
    // it emits, after the queued ones were written).
    packet.clientId = client.id
    // Aedes' own rule, kept: clients may not publish under $SYS/ (so a bridge to it needs a
    // notification_topic elsewhere, or notifications_local_only).
    if (packet.topic.startsWith('$SYS/')) return callback(new Error('$SYS/ topic is reserved'))
    if (packet.qos !== 1) return callback(null)
    publish(packet, client, (err) => {
      if (!err) packet.midgePublished = true
      callback(err || null)
    })
  }
}

aedes.on('clientError', (client, err) => console.log(`client ${client.id} error: ${err.message}`))
aedes.on('client', (client) => console.log(`client ${client.id} connected`))
aedes.on('clientDisconnect', (client) => console.log(`client ${client.id} disconnected`))

const server = net.createServer(aedes.handle)
server.listen(Number(port), '127.0.0.1', () => console.log(`listening ${port}`))
process.on('SIGTERM', () => aedes.close(() => server.close(() => process.exit(0))))
