// Drives devdb with the official Node.js driver (npm package "mongodb").
// Usage: node node_driver.js MONGODB_URI. Exits non-zero on the first
// failed check, printing what differed.
'use strict';
const assert = require('node:assert/strict');
const { MongoClient } = require('mongodb');

async function main(uri) {
  const opts = { serverSelectionTimeoutMS: 120000 };
  let client = new MongoClient(uri, opts);
  await client.connect();
  let coll = client.db('node').collection('people');

  // CRUD
  await coll.insertMany([{ _id: 1, name: 'ann' }, { _id: 2, name: 'bo' }]);
  assert.deepEqual(await coll.find({ name: { $regex: '^a' } }).toArray(), [{ _id: 1, name: 'ann' }]);
  await coll.updateOne({ _id: 2 }, { $set: { age: 3 } });
  assert.equal((await coll.findOne({ _id: 2 })).age, 3);
  await coll.deleteOne({ _id: 1 });
  assert.equal(await coll.countDocuments({}), 1);
  await assert.rejects(coll.insertOne({ _id: 2 }), (e) => e.code === 11000 && e.keyValue._id === 2);
  console.log('crud ok');

  // Transactions: one committed, one aborted.
  const session = client.startSession();
  await session.withTransaction(async () => {
    await coll.insertOne({ _id: 3 }, { session });
    await coll.updateOne({ _id: 2 }, { $inc: { age: 1 } }, { session });
  });
  await session.endSession();
  assert.equal((await coll.findOne({ _id: 2 })).age, 4);
  assert.equal(await coll.countDocuments({ _id: 3 }), 1);
  const s2 = client.startSession();
  s2.startTransaction();
  await coll.insertOne({ _id: 4 }, { session: s2 });
  await s2.abortTransaction();
  await s2.endSession();
  assert.equal(await coll.countDocuments({ _id: 4 }), 0);
  console.log('transactions ok');

  // A change stream, then resumed with its token from a new connection.
  const cs = coll.watch([{ $match: { operationType: 'insert' } }]);
  assert.equal(await cs.tryNext(), null); // opens the stream
  await coll.insertOne({ _id: 10 });
  const ev = await cs.next();
  assert.equal(ev.documentKey._id, 10);
  const token = cs.resumeToken;
  await cs.close();
  await client.close();

  client = new MongoClient(uri, opts);
  await client.connect();
  coll = client.db('node').collection('people');
  await coll.insertOne({ _id: 11 });
  await coll.updateOne({ _id: 11 }, { $set: { x: 1 } }); // filtered out
  await coll.insertOne({ _id: 12 });
  const resumed = coll.watch([{ $match: { operationType: 'insert' } }], { resumeAfter: token });
  assert.equal((await resumed.next()).documentKey._id, 11);
  assert.equal((await resumed.next()).documentKey._id, 12);
  await resumed.close();
  await client.close();
  console.log('change stream ok');
}

main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
