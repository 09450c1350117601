import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sqliteDatabase } from './sqlite-database.js';

describe('sqliteDatabase (rows read as arrays, statements reused)', () => {
  let raw: BetterSqlite3.Database;

  beforeEach(() => {
    raw = new BetterSqlite3(':memory:');
    raw.exec(`create table t (id integer primary key, name text, score real, data blob, note text)`);
    raw.prepare('insert into t (id, name, score, data, note) values (?, ?, ?, ?, ?)').run(1, 'a', 1.5, Buffer.from([1, 2]), null);
    raw.prepare('insert into t (id, name, score, data, note) values (?, ?, ?, ?, ?)').run(2, 'b', -2, null, 'x');
  });
  afterEach(() => raw.close());

  it('answers the same row objects as better-sqlite3, for all() and iterate()', () => {
    const db = sqliteDatabase(raw);
    const sql = 'select * from t where id >= ? order by id';
    const expected = raw.prepare(sql).all(1);
    for (let round = 0; round < 2; round++) {
      expect(db.prepare(sql).all([1])).toEqual(expected);
      expect([...db.prepare(sql).iterate([1])]).toEqual(expected);
    }
    expect(Object.keys(db.prepare(sql).all([1])[0] as object)).toEqual(['id', 'name', 'score', 'data', 'note']);
    expect(db.prepare('select name from t where id = ?').all([99])).toEqual([]);
    // A later column of the same name wins, as in better-sqlite3.
    expect(db.prepare('select 1 as a, 2 as a').all([])).toEqual(raw.prepare('select 1 as a, 2 as a').all());
    // A column named "__proto__" is an own property, never the row's prototype.
    const [row] = db.prepare(`select 3 as "__proto__"`).all([]) as Array<Record<string, unknown>>;
    expect(Object.getPrototypeOf(row)).toBe(Object.prototype);
    expect(Object.keys(row!)).toEqual(['__proto__']);
  });

  it('runs writes and reports their changes', () => {
    const db = sqliteDatabase(raw);
    const statement = db.prepare('update t set note = ? where id > ?');
    expect(statement.reader).toBe(false);
    expect(statement.run(['y', 0])).toMatchObject({ changes: 2 });
    expect(db.prepare('insert into t (id, name) values (?, ?) returning id, name').all([3, 'c'])).toEqual([{ id: 3, name: 'c' }]);
  });

  it('sees the new columns of a table after a schema change, through DDL run here or elsewhere', () => {
    const db = sqliteDatabase(raw);
    const sql = 'select * from t where id = ?';
    expect(Object.keys(db.prepare(sql).all([1])[0] as object)).toEqual(['id', 'name', 'score', 'data', 'note']);
    db.prepare('alter table t add column extra text').run([]);
    expect(db.prepare(sql).all([1])).toEqual([{ id: 1, name: 'a', score: 1.5, data: Buffer.from([1, 2]), note: null, extra: null }]);
    // Changed behind the adapter's back: the statement re-prepares itself, and the column names follow.
    raw.exec(`alter table t add column more integer default 7`);
    expect(db.prepare(sql).all([1])).toEqual([{ id: 1, name: 'a', score: 1.5, data: Buffer.from([1, 2]), note: null, extra: null, more: 7 }]);
  });
});
